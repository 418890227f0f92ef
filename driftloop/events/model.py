"""The one transport type, ``Event``, its constructor and the codecs every binding shares:
RFC 3339 times, and ``data`` to and from bytes by its content type."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from driftloop.events import media
from driftloop.events.payloads import Payload
from driftloop.events.safejson import MAX_JSON_DEPTH, load_json
from driftloop.events.types import JSON

__all__ = [
    "Event",
    "decode_data",
    "encode_data",
    "format_time",
    "is_json_data",
    "new_event",
    "parse_time",
]


@dataclass(frozen=True)
class Event:
    """One CloudEvent. ``data`` is JSON-like, or ``bytes`` for media payloads."""

    id: str
    source: str
    type: str
    data: Any = None
    time: datetime | None = None
    datacontenttype: str | None = None
    subject: str | None = None
    extensions: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_binary(self) -> bool:
        return isinstance(self.data, bytes | bytearray)

    def with_extensions(self, **ext: str) -> Event:
        return replace(self, extensions={**self.extensions, **ext})


def new_event(
    type: str,
    source: str,
    data: Payload | Any = None,
    *,
    id: str | None = None,
    datacontenttype: str | None = None,
    subject: str | None = None,
    time: datetime | None = None,
    **extensions: str,
) -> Event:
    """A new event with a fresh uuid4 id and the current UTC time unless given. A payload
    model becomes its JSON object (``Payload.to_data``)."""
    if isinstance(data, Payload):
        data = data.to_data()
    if datacontenttype is None and not isinstance(data, bytes | bytearray) and data is not None:
        datacontenttype = JSON
    return Event(
        id=id or str(uuid.uuid4()),
        source=source,
        type=type,
        data=data,
        time=time or datetime.now(UTC),
        datacontenttype=datacontenttype,
        subject=subject,
        extensions={k: str(v) for k, v in extensions.items()},
    )


def format_time(t: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


_RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt](?P<clock>\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d+))?"
    r"(?P<zone>[Zz]|[+-]\d{2}:\d{2})"
)


def parse_time(value: str) -> datetime:
    """An RFC 3339 date-time (``T`` separator, zone required) as an aware UTC datetime.

    Raises ``ValueError`` for anything else, including times that leave the representable
    range once moved to UTC (``9999-12-31T23:59:59-23:59``)."""
    m = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"not an RFC 3339 date-time: {value!r:.80}")
    zone = m["zone"]
    frac = f".{m['frac'][:6]}" if m["frac"] else ""
    t = datetime.fromisoformat(
        f"{m['date']}T{m['clock']}{frac}{'+00:00' if zone in 'Zz' else zone}"
    )
    try:
        return t.astimezone(UTC)
    except OverflowError as e:
        raise ValueError(f"date-time out of range once in UTC: {value!r:.80}") from e


def is_json_data(content_type: str | None) -> bool:
    """Whether ``data`` of this content type is JSON: CloudEvents reads a missing
    ``datacontenttype`` as ``application/json``."""
    return not content_type or media.is_json(content_type)


def encode_data(event: Event) -> bytes | None:
    """The data as bytes for a binary-mode body or Kafka value."""
    if event.data is None:
        return None
    if isinstance(event.data, bytes | bytearray):
        return bytes(event.data)
    if isinstance(event.data, str) and not is_json_data(event.datacontenttype):
        return event.data.encode()
    return json.dumps(event.data, separators=(",", ":"), allow_nan=False).encode()


def decode_data(
    raw: bytes | None, content_type: str | None, *, max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """Bytes of a binary-mode body or Kafka value back to data (JSON decoded when JSON)."""
    if raw is None:
        return None
    if is_json_data(content_type):
        if raw == b"":
            return None
        return load_json(raw, max_depth=max_depth, where="data")
    if media.is_text(content_type):
        return raw.decode("utf-8", errors="replace")
    return raw
