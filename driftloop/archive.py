"""Archive v0: Kafka topics → partitioned JSONL in the blob store.

Layout: ``<kind>/model=<m>/date=<YYYY-MM-DD>/<file>.jsonl``, one structured CloudEvent
per line. Offsets are committed only after the blob write, so a crash re-reads what
was not committed; each (source, id) is written once per model because the archive
remembers what the store already holds (loaded from the store at first sight of a
model, for the last ``archive_dedup_days`` days) and drops repeats. Records that are
not CloudEvents or name no valid model go to the dead-letter topic with the reason.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from driftloop import bus, labeled, topics
from driftloop.blob import BlobStore, open_store, partition_key
from driftloop.errors import DriftloopError
from driftloop.events import Event, from_kafka, to_structured
from driftloop.naming import is_safe_segment

if TYPE_CHECKING:
    from kafka import KafkaConsumer, KafkaProducer

    from driftloop.settings import Settings

log = logging.getLogger("driftloop.archive")

KINDS: dict[str, str] = {
    topics.FEEDBACK: "feedback",
    topics.PREDICTIONS: "predictions",
    topics.LABELED: "labeled",
}


@dataclass(frozen=True)
class Poison:
    """A record the archive cannot place, and why."""

    reason: str


def route(event: Event, kafka_timestamp_ms: int | None) -> tuple[str, date] | Poison:
    """The (model, date) partition of an event, or why it has none. The model is the data's
    ``model`` (the extension only when the data names none), as in the Flink archive."""
    data = event.data if isinstance(event.data, dict) else {}
    model = data.get("model") or event.extensions.get("model")
    if not is_safe_segment(model):
        return Poison(f"no valid model name in the event (got {model!r})")
    if event.time is not None:
        day = event.time.astimezone(UTC).date()
    elif kafka_timestamp_ms is not None:
        day = datetime.fromtimestamp(kafka_timestamp_ms / 1000, UTC).date()
    else:
        day = datetime.now(UTC).date()
    return str(model), day


def is_committed(key: str) -> bool:
    """False for in-progress files of a writer (names starting with '.' or '_', the
    Hadoop/Flink convention for hidden part files): readers skip them."""
    return not key.rsplit("/", 1)[-1].startswith((".", "_"))


def archived_keys(store: BlobStore, prefix: str) -> list[str]:
    """The committed archive files under ``prefix``."""
    return [k for k in store.list(prefix) if is_committed(k)]


def event_key(event: Event) -> str:
    """The idempotency key: CloudEvents define (source, id) as unique; a labeled record is
    the feedback it carries (``driftloop.labeled.identity``)."""
    return labeled.identity(event.source, event.id, event.type, event.data)


class SeenIndex:
    """Which (source, id) each (kind, model) already holds in the store.

    The last ``dedup_days`` of partitions are read once per (kind, model); an event dated
    before that window also reads its own day's partition, so a redelivered event is
    recognised whatever its time (the partition it would be written to is always known).
    """

    def __init__(self, store: BlobStore, dedup_days: int) -> None:
        self.store = store
        self.dedup_days = dedup_days
        self._seen: dict[tuple[str, str], set[str]] = {}
        self._days: dict[tuple[str, str], set[str]] = {}

    def for_partition(self, kind: str, model: str, day: date) -> set[str]:
        """The identities archived for (kind, model), including ``day``'s partition."""
        key = (kind, model)
        if key not in self._seen:
            oldest = (datetime.now(UTC).date() - timedelta(days=self.dedup_days)).isoformat()
            self._seen[key], self._days[key] = set(), set()
            self._load(key, f"{kind}/model={model}/", lambda d: d >= oldest)
        d = day.isoformat()
        if d not in self._days[key]:
            self._load(key, f"{kind}/model={model}/date={d}/", lambda found: found == d)
            self._days[key].add(d)
        return self._seen[key]

    def _load(self, key: tuple[str, str], prefix: str, wanted: Callable[[str], bool]) -> None:
        seen, days = self._seen[key], self._days[key]
        for k in archived_keys(self.store, prefix):
            part = k.split("/")[2] if k.count("/") >= 3 else ""
            if not part.startswith("date=") or not wanted(part[5:]):
                continue
            days.add(part[5:])
            for line in self.store.get(k).splitlines():
                if line.strip():
                    obj = json.loads(line)
                    seen.add(labeled.identity(str(obj.get("source")), str(obj.get("id")),
                                              obj.get("type"), obj.get("data")))


def encode_lines(events: Iterable[Event]) -> bytes:
    return b"".join(json.dumps(to_structured(e), separators=(",", ":")).encode() + b"\n"
                    for e in events)


class Archiver:
    """One consumer group that archives ``KINDS`` topics into one blob store."""

    def __init__(
        self,
        settings: Settings,
        store: BlobStore,
        *,
        group_id: str = "driftloop-archive",
        topic_names: Iterable[str] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.group_id = group_id
        self.topic_names = list(topic_names or KINDS)
        self.seen = SeenIndex(store, settings.archive_dedup_days)
        self._stop = threading.Event()
        self.written = 0
        self.duplicates = 0
        self.dead_lettered = 0

    def stop(self) -> None:
        self._stop.set()

    def run(self, consumer: KafkaConsumer | None = None,
            producer: KafkaProducer | None = None) -> None:
        """Archive until ``stop()``; each batch is written, then its offsets committed."""
        consumer = consumer or bus.make_consumer(self.settings, self.topic_names, self.group_id)
        producer = producer or bus.make_producer(self.settings)
        try:
            while not self._stop.is_set():
                batch = self._poll(consumer)
                if batch:
                    self.process(batch, producer)
                    consumer.commit()
        finally:
            consumer.close()
            producer.close(timeout=5)

    def _poll(self, consumer: KafkaConsumer) -> list[Any]:
        records: list[Any] = []
        deadline = time.monotonic() + self.settings.archive_flush_s
        while not self._stop.is_set() and len(records) < self.settings.archive_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            polled = consumer.poll(timeout_ms=int(min(remaining, 0.5) * 1000),
                                   max_records=self.settings.archive_batch_size - len(records))
            for recs in polled.values():
                records.extend(recs)
        return records

    def process(self, records: list[Any], producer: KafkaProducer) -> None:
        """Write one batch of consumer records (dead letters flushed before returning)."""
        groups: dict[tuple[str, str, date], list[Event]] = defaultdict(list)
        dead: list[Any] = []
        for rec in records:
            kind = KINDS.get(rec.topic)
            try:
                event = from_kafka(rec.value, rec.headers, rec.key)
            except DriftloopError as e:
                dead.append(bus.dead_letter(producer, reason=f"archive: {e.message}",
                                            source_topic=rec.topic, value=rec.value,
                                            headers=rec.headers, key=rec.key,
                                            partition=rec.partition, offset=rec.offset))
                continue
            placed = route(event, rec.timestamp)
            if isinstance(placed, Poison) or kind is None:
                why = placed.reason if isinstance(placed, Poison) else "unknown topic"
                dead.append(bus.dead_letter(producer, reason=f"archive: {why}",
                                            source_topic=rec.topic, value=rec.value,
                                            headers=rec.headers, key=rec.key,
                                            partition=rec.partition, offset=rec.offset))
                continue
            model, day = placed
            groups[(kind, model, day)].append(event)
        for (kind, model, day), events in groups.items():
            self._write(kind, model, day, events)
        for f in dead:
            f.get(timeout=30)
        self.dead_lettered += len(dead)

    def _write(self, kind: str, model: str, day: date, events: list[Event]) -> None:
        seen = self.seen.for_partition(kind, model, day)
        fresh: list[Event] = []
        batch_keys: set[str] = set()
        for e in events:
            k = event_key(e)
            if k in seen or k in batch_keys:
                self.duplicates += 1
                continue
            batch_keys.add(k)
            fresh.append(e)
        if not fresh:
            return
        name = f"{datetime.now(UTC).strftime('%H%M%S%f')}-{uuid.uuid4().hex[:8]}.jsonl"
        self.store.put(partition_key(kind, model, day, name), encode_lines(fresh))
        seen.update(batch_keys)
        self.written += len(fresh)


def main() -> None:
    """Entry point of the archive process in the local stack."""
    from driftloop.settings import Settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings()
    archiver = Archiver(settings, open_store(settings.resolved_blob_url, settings))
    signal.signal(signal.SIGTERM, lambda *_: archiver.stop())
    signal.signal(signal.SIGINT, lambda *_: archiver.stop())
    log.info("archiving %s to %s", ", ".join(archiver.topic_names), archiver.store.url)
    archiver.run()
    log.info("stopped: %d written, %d duplicates dropped, %d dead-lettered",
             archiver.written, archiver.duplicates, archiver.dead_lettered)


if __name__ == "__main__":
    main()
