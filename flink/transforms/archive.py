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

from driftloop import events
from driftloop.errors import DriftloopError
from driftloop.naming import is_safe_segment

UNKNOWN_MODEL = "unknown"


@dataclass(frozen=True)
class ArchiveLine:
    line: str
    model: str
    date: str
    dedup_key: str
    """``source`` + NUL + ``id``: one line per event even when Kafka holds it twice."""


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
        raw = (value or b"").decode("utf-8", errors="replace")
        line = json.dumps({"invalid": e.message, "value": raw}, separators=(",", ":"))
        return ArchiveLine(line, "invalid", fallback_day, f"invalid\x00{kafka_time_ms}\x00{raw}")
    model = event.extensions.get("model")
    if not model and isinstance(event.data, Mapping):
        model = event.data.get("model")
    if not is_safe_segment(model):
        model = UNKNOWN_MODEL
    day = event.time.astimezone(UTC).date().isoformat() if event.time else fallback_day
    line = json.dumps(events.to_structured(event), separators=(",", ":"), sort_keys=True)
    return ArchiveLine(line, str(model), day, f"{event.source}\x00{event.id}")
