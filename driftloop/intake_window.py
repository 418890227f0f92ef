"""feedback-intake's replay window: which (source, id)s ``driftloop.feedback`` already
holds, so a retried CloudEvent is answered 202 without being written again.

- ``event_key``: the identity of an event, a 16-byte BLAKE2b digest of (source, id) -
  never the id alone (two sources may use one id: two events).
- ``ReplayWindow``: digests seen in the last ``window_s`` seconds (by the record's
  timestamp), at most ``max_entries`` of them (the oldest go first). A dict of digest ->
  time: about 180 bytes per entry in CPython (measured), so the default bound of 200,000
  is ~36 MB.
- ``Claims``: the (source, id)s a request of this process is writing now; a second
  request for one of them waits for the first's outcome instead of writing it again.
- ``FeedbackTail``: a consumer of the feedback topic (no group, every partition,
  read_committed) that seeks to now - window on start, reads to the end offsets (only
  then ``ready``), then keeps reading, so a retry that lands on another replica after
  the first write showed in the topic is recognised too. ``sync`` waits until it has read
  every record the topic held when it was called: what settles a write answered 503 that
  Kafka may still have persisted (its acknowledgement lost with a broker).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from driftloop import topics

if TYPE_CHECKING:
    from kafka import KafkaConsumer

    from driftloop.settings import Settings

log = logging.getLogger("driftloop.intake")

Key = bytes
"""A digest of (source, id)."""


def event_key(source: str, event_id: str) -> Key:
    """The identity of a CloudEvent: (source, id), length-prefixed so no two pairs share
    one encoding."""
    s, i = source.encode("utf-8", "surrogatepass"), event_id.encode("utf-8", "surrogatepass")
    h = hashlib.blake2b(digest_size=16)
    h.update(len(s).to_bytes(4, "big"))
    h.update(s)
    h.update(i)
    return h.digest()


def record_key(headers: Iterable[tuple[str, bytes | None]] | None) -> Key | None:
    """The key of a binary-mode record (``ce_source``, ``ce_id`` headers: how intake
    writes), or None for a record that is not one."""
    source = ident = None
    for name, value in headers or ():
        if name == "ce_source":
            source = value
        elif name == "ce_id":
            ident = value
    if not source or not ident:
        return None
    return event_key(source.decode("utf-8", "replace"), ident.decode("utf-8", "replace"))


class ReplayWindow:
    """Keys seen in the last ``window_s`` seconds, at most ``max_entries`` (thread-safe)."""

    def __init__(
        self, window_s: float, max_entries: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self._clock = clock
        self._seen: OrderedDict[Key, float] = OrderedDict()
        self._lock = threading.Lock()
        self.evicted = 0
        """Entries dropped for the bound before their time (the window was shorter then)."""

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, key: Key, at: float | None = None) -> None:
        """Remember ``key`` as written at ``at`` (epoch seconds; default now)."""
        at = self._clock() if at is None else at
        with self._lock:
            old = self._seen.pop(key, None)
            self._seen[key] = at if old is None else max(old, at)
            self._expire(self._clock())
            while len(self._seen) > self.max_entries:
                self._seen.popitem(last=False)
                self.evicted += 1

    def discard(self, key: Key) -> None:
        with self._lock:
            self._seen.pop(key, None)

    def seen(self, key: Key) -> bool:
        """Whether ``key`` was written within the window."""
        with self._lock:
            at = self._seen.get(key)
            return at is not None and at >= self._clock() - self.window_s

    def _expire(self, now: float) -> None:
        """Drop the oldest entries while they are out of the window (entries are kept in
        arrival order: a late arrival with an older time leaves with its neighbours)."""
        horizon = now - self.window_s
        while self._seen:
            key, at = next(iter(self._seen.items()))
            if at >= horizon:
                break
            del self._seen[key]


class Claims:
    """(source, id)s being written by a request of this process now."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._writing: dict[Key, threading.Event] = {}

    def claim(self, key: Key) -> threading.Event | None:
        """None: the caller now owns ``key`` and must ``release`` it; else the event the
        current owner sets when its write is over."""
        with self._lock:
            owner = self._writing.get(key)
            if owner is None:
                self._writing[key] = threading.Event()
            return owner

    def release(self, key: Key) -> None:
        with self._lock:
            done = self._writing.pop(key, None)
        if done is not None:
            done.set()


class FeedbackTail:
    """Reads ``driftloop.feedback`` into a ``ReplayWindow`` in a daemon thread."""

    def __init__(
        self,
        settings: Settings,
        window: ReplayWindow,
        consumer_factory: Callable[[], KafkaConsumer] | None = None,
    ) -> None:
        self.settings = settings
        self.window = window
        self._factory = consumer_factory or self._default_consumer
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.records = 0
        self._sync = threading.Condition()
        self._sync_asked = 0
        """Generation of the latest ``sync`` call."""
        self._sync_reached = 0
        """Every ``sync`` up to this generation has its records in the window."""

    def _default_consumer(self) -> KafkaConsumer:
        from kafka import KafkaConsumer

        from driftloop.bus import client_config

        return KafkaConsumer(
            **client_config(self.settings, "intake-window"),
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            reconnect_backoff_max_ms=2_000,
            request_timeout_ms=30_000,
        )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="intake-window", daemon=True)
        self._thread.start()

    @property
    def ready(self) -> bool:
        """Caught up: every record written up to the start is in the window."""
        return self._ready.is_set()

    def wait_ready(self, timeout_s: float) -> bool:
        return self._ready.wait(timeout_s)

    def sync(self, timeout_s: float) -> bool:
        """Wait until the window holds every record the topic held (up to its end offsets)
        when this was called; False when that takes longer than ``timeout_s`` (Kafka
        away, a leader being elected): nothing is then known about what it holds now."""
        with self._sync:
            self._sync_asked += 1
            asked = self._sync_asked
            return self._sync.wait_for(lambda: self._sync_reached >= asked, timeout_s)

    def _synced(self, asked: int) -> None:
        with self._sync:
            if asked > self._sync_reached:
                self._sync_reached = asked
                self._sync.notify_all()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        """Catch up, then tail; a failure (Kafka away) is retried with a fresh consumer
        from the window's start again (until caught up the service stays not ready)."""
        while not self._stop.is_set():
            consumer = None
            try:
                consumer = self._factory()
                asked = self._sync_asked  # before the end offsets the catch-up reads to
                self._catch_up(consumer)
                self._synced(asked)
                while not self._stop.is_set():
                    asked = self._sync_asked
                    if asked > self._sync_reached:
                        self._read_to_end(consumer, consumer.assignment())
                        self._synced(asked)
                    self._read(consumer.poll(timeout_ms=100))
            except Exception:
                log.warning("feedback window: reading the topic failed; retrying", exc_info=True)
                self._stop.wait(1.0)
            finally:
                if consumer is not None:
                    consumer.close()

    def _catch_up(self, consumer: KafkaConsumer) -> None:
        from kafka import TopicPartition

        parts = consumer.partitions_for_topic(topics.FEEDBACK)
        if not parts:
            raise RuntimeError(f"{topics.FEEDBACK} has no partitions (yet)")
        tps = [TopicPartition(topics.FEEDBACK, p) for p in sorted(parts)]
        consumer.assign(tps)
        since_ms = int((time.time() - self.window.window_s) * 1000)
        starts = consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
        ends = consumer.end_offsets(tps)
        for tp in tps:
            at = starts.get(tp)
            consumer.seek(tp, at.offset if at is not None else ends[tp])
        self._read_to_end(consumer, tps, ends)
        if not self._ready.is_set():
            log.info("feedback window caught up: %d (source, id)s", len(self.window))
        self._ready.set()

    def _read_to_end(
        self, consumer: KafkaConsumer, tps: Iterable[Any], ends: dict[Any, int] | None = None
    ) -> None:
        """Read until every partition's position reached its end offset (now's, unless
        given). read_committed: the end is the last stable offset; after a leader change
        the broker answers it only once the new leader knows its high watermark."""
        tps = list(tps)
        ends = consumer.end_offsets(tps) if ends is None else ends
        while not self._stop.is_set() and any(consumer.position(tp) < ends[tp] for tp in tps):
            self._read(consumer.poll(timeout_ms=500))

    def _read(self, batches: dict[Any, list[Any]]) -> None:
        for records in batches.values():
            for r in records:
                key = record_key(r.headers)
                if key is not None:
                    self.window.add(key, r.timestamp / 1000.0)
                    self.records += 1


__all__ = ["Claims", "FeedbackTail", "Key", "ReplayWindow", "event_key", "record_key"]
