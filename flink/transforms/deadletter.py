"""Dead letters and the record-size limit, without Flink or a producer.

The same headers as ``driftloop.bus.dead_letter`` (reason, source topic, partition, offset;
a value over the limit keeps its head plus ``dl_value_bytes``/``dl_value_sha256``), built as
a plain record so a Flink operator can emit it through its transactional sink. A dead letter
can never exceed the record limit itself, so parking a record cannot fail on size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from driftloop import topics
from driftloop.bus import (
    DL_REASON,
    DL_SOURCE_OFFSET,
    DL_SOURCE_PARTITION,
    DL_SOURCE_TOPIC,
)

DL_VALUE_BYTES = "dl_value_bytes"
DL_VALUE_SHA256 = "dl_value_sha256"

RECORD_OVERHEAD_BYTES = 512
"""Room for Kafka's per-record and per-batch framing in the size estimate."""
MAX_HEADER_BYTES = 8 * 1024


@dataclass(frozen=True)
class Record:
    """One Kafka record for the job's sink."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(frozen=True)
class Origin:
    """Where a record was read: named in its dead letter."""

    topic: str
    partition: int | None = None
    offset: int | None = None

    def to_json(self) -> dict[str, object]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}

    @classmethod
    def from_json(cls, obj: Mapping[str, object] | None, default_topic: str) -> Origin:
        obj = obj or {}
        part, off = obj.get("partition"), obj.get("offset")
        return cls(str(obj.get("topic") or default_topic),
                   part if isinstance(part, int) else None,
                   off if isinstance(off, int) else None)


def record_size(key: bytes | None, value: bytes | None,
                headers: Sequence[tuple[str, bytes]]) -> int:
    """An upper estimate of what a record costs against ``max.request.size``."""
    return (len(key or b"") + len(value or b"") + RECORD_OVERHEAD_BYTES
            + sum(len(k.encode()) + len(v) + 8 for k, v in headers))


def dead_letter(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | Mapping[str, bytes | None] | None,
    *,
    reason: str,
    origin: Origin,
    key: bytes | None = None,
    max_value_bytes: int = 256 * 1024,
) -> Record:
    """The dead letter of one record: original value (head only when too long) and headers,
    plus the reason (``<code>: <detail>``) and where the record was read."""
    hdrs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
    out: list[tuple[str, bytes]] = []
    for k, v in hdrs:
        if k.startswith("dl_") and k not in ("dl_sink",):
            continue
        out.append((k[:256], (v or b"")[:MAX_HEADER_BYTES]))
    out.append((DL_REASON, reason.encode("utf-8", "replace")[:4096]))
    out.append((DL_SOURCE_TOPIC, origin.topic.encode()[:1024]))
    if origin.partition is not None:
        out.append((DL_SOURCE_PARTITION, str(origin.partition).encode()))
    if origin.offset is not None:
        out.append((DL_SOURCE_OFFSET, str(origin.offset).encode()))
    if value is not None and len(value) > max_value_bytes:
        out.append((DL_VALUE_BYTES, str(len(value)).encode()))
        out.append((DL_VALUE_SHA256, hashlib.sha256(value).hexdigest().encode()))
        value = value[:max_value_bytes]
    return Record(topics.DEADLETTER, (key or b"")[:MAX_HEADER_BYTES] or None, value, out)
