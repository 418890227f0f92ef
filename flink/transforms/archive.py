"""Kafka record → one archive line and its partition (model, date), without Flink.

Lines are structured-mode CloudEvents JSON (``to_structured``), one per line, the layout
archive v0 writes: ``<kind>/model=<m>/date=<YYYY-MM-DD>/…jsonl``. The date is the event's
``time`` in UTC (the Kafka timestamp when the event has none), so a replay lands every
record in the same partition as the first run did.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from driftloop import events, labeled
from driftloop.errors import DriftloopError
from driftloop.naming import is_safe_segment

UNKNOWN_MODEL = "unknown"


@dataclass(frozen=True)
class ArchiveLine:
    line: str
    model: str
    date: str
    dedup_key: str
    """The event's true identity (``driftloop.labeled.identity``: its (source, id), a labeled
    record's feedback (source, id)): one line per event even when Kafka holds it twice."""


def archive_line(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | Mapping[str, bytes | None] | None,
    kafka_time_ms: int,
) -> ArchiveLine:
    """The line to archive; records that are not CloudEvents are kept as ``invalid``."""
    hdrs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
    hdrs = [(k, v if v is not None else b"") for k, v in hdrs]
    fallback_day = datetime.fromtimestamp(kafka_time_ms / 1000, UTC).date().isoformat()
    try:
        event = events.from_kafka(value, hdrs)
    except DriftloopError as e:
        return invalid_line(value, kafka_time_ms, e.message)
    model = archive_model(event)
    day = event.time.astimezone(UTC).date().isoformat() if event.time else fallback_day
    line = json.dumps(events.to_structured(event), separators=(",", ":"), sort_keys=True)
    return ArchiveLine(line, model, day,
                       labeled.identity(event.source, event.id, event.type, event.data))


def invalid_line(value: bytes | None, kafka_time_ms: int, why: str) -> ArchiveLine:
    """A record that is no CloudEvent (or could not be handled), kept under ``invalid``."""
    day = datetime.fromtimestamp(kafka_time_ms / 1000, UTC).date().isoformat()
    raw = (value or b"").decode("utf-8", errors="replace")
    line = json.dumps({"invalid": why, "value": raw}, separators=(",", ":"))
    return ArchiveLine(line, "invalid", day, f"invalid\x00{kafka_time_ms}\x00{raw}")


def archive_model(event: events.Event) -> str:
    """The partition's model, one rule for every archive and the join: the data's ``model``
    (the ``model`` extension only when the data names none); unsafe names → ``unknown``."""
    model = event.data.get("model") if isinstance(event.data, Mapping) else None
    if not model:
        model = event.extensions.get("model")
    return str(model) if is_safe_segment(model) else UNKNOWN_MODEL
