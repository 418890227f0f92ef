"""The Kafka protocol binding, binary content mode both ways (``ce_*`` headers, the data as
the record value, ``content-type`` for ``datacontenttype``); structured records
(``application/cloudevents+json`` values) are read too.

A thin binding of our own rather than the SDK's ``cloudevents.kafka`` (1.12): that module
cannot keep guarantees driftloop's consumers and tests hold (measured against 1.12.0):

- ``from_binary`` invents an ``id`` (uuid4) and a ``time`` (now) when the headers carry
  none: identity is (source, id), so a record without ``ce_id`` must be refused, and an
  event without a time must stay without one (archive partitions by event time);
- it strict-decodes header bytes (``UnicodeDecodeError``) and crashes on a null header
  value (``AttributeError``): hostile records must become a ``BadRequest`` for the
  dead-letter topic, not an unexpected exception in a consumer loop;
- it turns the record key into a ``partitionkey`` attribute, and ``to_binary`` drops a
  ``partitionkey`` extension from the headers: a record would not read back as the event
  written (``from_kafka(to_kafka(e)) == e``);
- ``to_binary`` raises ``KeyError`` for an event without ``datacontenttype``.

Both directions still use the data codec and the validation the HTTP binding uses. A
structured record is read as the HTTP structured mode reads a body (``from_structured``):
there a missing ``time`` is stamped on reading, as for an event posted over HTTP; only a
binary record without ``ce_time`` stays without one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from driftloop.errors import BadRequest, FieldError, ValidationFailed
from driftloop.events import media
from driftloop.events.http import CORE_ATTRIBUTES, REQUIRED_ATTRIBUTES, from_structured
from driftloop.events.model import Event, decode_data, encode_data, format_time, parse_time
from driftloop.events.safejson import load_json
from driftloop.events.types import SPECVERSION

__all__ = ["KafkaRecord", "from_kafka", "to_kafka"]


class KafkaRecord(NamedTuple):
    """What a producer sends: key, value, headers (Kafka protocol binding, binary mode)."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def to_kafka(event: Event, key: str | None = None) -> KafkaRecord:
    """Binary content mode: ``ce_*`` headers, the data as value, key from ``key`` or
    the ``partitionkey`` extension."""
    headers: list[tuple[str, bytes]] = [
        ("ce_specversion", SPECVERSION.encode()),
        ("ce_id", event.id.encode()),
        ("ce_source", event.source.encode()),
        ("ce_type", event.type.encode()),
    ]
    if event.time is not None:
        headers.append(("ce_time", format_time(event.time).encode()))
    if event.subject:
        headers.append(("ce_subject", event.subject.encode()))
    for k, v in event.extensions.items():
        headers.append((f"ce_{k}", str(v).encode()))
    if event.datacontenttype:
        headers.append(("content-type", event.datacontenttype.encode()))
    record_key = key if key is not None else event.extensions.get("partitionkey")
    return KafkaRecord(
        record_key.encode() if record_key is not None else None, encode_data(event), headers
    )


def from_kafka(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | None,
    key: bytes | None = None,
) -> Event:
    """A Kafka record (binary or structured mode) back to an ``Event``. ``key`` is accepted
    for symmetry with consumers' records and not read: the event names its own model."""
    h: dict[str, str] = {}
    for name, raw in headers or []:
        h[name.lower()] = raw.decode("utf-8", errors="replace") if raw is not None else ""
    content_type = h.get("content-type")
    if "ce_specversion" not in h:
        if media.is_cloudevents_structured(content_type):
            return from_structured(load_json(value or b""))
        raise BadRequest(
            "record: not a CloudEvent (no ce_specversion header, not structured)",
            fields=[FieldError("ce_specversion", "required", "header missing")],
        )
    missing = [
        FieldError(f"ce_{n}", "required", f"header ce_{n} is required")
        for n in REQUIRED_ATTRIBUTES
        if not h.get(f"ce_{n}")
    ]
    if missing:
        raise ValidationFailed(missing)
    try:
        t = parse_time(h["ce_time"]) if h.get("ce_time") else None
    except ValueError as e:
        raise ValidationFailed([FieldError("ce_time", "rfc3339", str(e))]) from e
    ext = {
        name[3:]: v
        for name, v in h.items()
        if name.startswith("ce_") and name[3:] not in CORE_ATTRIBUTES
    }
    return Event(
        id=h["ce_id"],
        source=h["ce_source"],
        type=h["ce_type"],
        data=decode_data(value, content_type),
        time=t,
        datacontenttype=content_type,
        subject=h.get("ce_subject"),
        extensions=ext,
    )
