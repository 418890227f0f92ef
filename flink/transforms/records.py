"""Raw input records → preprocessed CloudEvents (or a rejection), independent of the runner.

The stream job feeds Kafka records (value + headers) and the batch job feeds blob objects;
both call ``preprocess_event`` so their outputs are identical for identical inputs. The
output record schema is documented in flink/README.md.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from driftloop import events
from driftloop.blob import partition_key
from driftloop.errors import DriftloopError
from driftloop.events import PREPROCESSED
from driftloop.naming import is_safe_segment
from flink.transforms import Rejected
from flink.transforms.audio import AudioConfig, encode_wav16, preprocess_audio
from flink.transforms.dataref import EXTENSION as DATAREF
from flink.transforms.dataref import Resolve, dataref_for
from flink.transforms.deadletter import Origin, dead_letter, record_size
from flink.transforms.image import ImageConfig, encode_png, preprocess_image

SOURCE = "driftloop/flink/preprocess"

Offload = Callable[[str, bytes], str]
"""Stores a payload too big to inline under a blob key; returns the store's URL."""


@dataclass(frozen=True)
class PreprocessConfig:
    audio: AudioConfig = field(default_factory=AudioConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    inline_max_bytes: int = 64 * 1024
    """Payloads whose base64 form is at most this long travel inline; bigger ones go to the
    blob store (when there is one) and the record carries a reference."""
    max_record_bytes: int = 2 * 1024 * 1024
    """The agreed Kafka record limit: a bigger preprocessed record is dead-lettered."""
    max_dead_letter_value_bytes: int = 256 * 1024


def base64_size(n: int) -> int:
    """Characters of ``n`` bytes in base64: what an inline payload adds to the record."""
    return 4 * ((n + 2) // 3)


def _payload(
    content_type: str, body: bytes, key: str, cfg: PreprocessConfig, offload: Offload | None
) -> tuple[dict[str, Any], str | None]:
    """The record's ``payload`` and, when it went to the blob store, its ``dataref``."""
    if base64_size(len(body)) <= cfg.inline_max_bytes or offload is None:
        return {"content_type": content_type, "encoding": "base64", "bytes": len(body),
                "data": base64.b64encode(body).decode()}, None
    url = offload(key, body)
    return ({"content_type": content_type, "encoding": "blob", "bytes": len(body),
             "blob_url": url, "blob_key": key}, dataref_for(url, key))


def _day(t: datetime | None) -> str:
    return (t or datetime.now(UTC)).astimezone(UTC).date().isoformat()


def preprocess_event(
    event: events.Event,
    modality: str,
    cfg: PreprocessConfig,
    offload: Offload | None = None,
    resolve: Resolve | None = None,
) -> events.Event:
    """One raw input event → its preprocessed event (same id); raises ``Rejected``.

    An event without data but with a ``dataref`` extension is read through ``resolve``
    (inline data, when present, wins: it needs no read)."""
    if event.type != events.INPUT:
        raise Rejected(Rejected.INVALID_EVENT, f"type {event.type!r} is not {events.INPUT}")
    model = event.extensions.get("model")
    if model is None or not is_safe_segment(model):
        raise Rejected(Rejected.INVALID_EVENT, f"extension model {model!r} is missing or unsafe")
    data = event.data
    if isinstance(data, str):
        data = data.encode()
    if not data and event.extensions.get(DATAREF):
        if resolve is None:
            raise Rejected(Rejected.INVALID_EVENT, "a dataref input needs a blob store")
        data = resolve(event.extensions[DATAREF])
    if data is None:
        data = b""
    if not isinstance(data, bytes | bytearray):
        raise Rejected(Rejected.WRONG_CONTENT_TYPE,
                       f"content type {event.datacontenttype!r} carries no media bytes")
    # The input's identity is (source, id): two apps may both send an id "1", and each
    # payload must keep its own blob (a replay of one rewrites only its own).
    digest = hashlib.sha256(f"{event.source}\x00{event.id}".encode()).hexdigest()[:32]
    out: dict[str, Any] = {"model": model, "modality": modality,
                           "input_content_type": event.datacontenttype}
    if modality == "audio":
        a = preprocess_audio(bytes(data), event.datacontenttype, cfg.audio)
        body = encode_wav16(a.samples, a.sample_rate)
        key = partition_key("preprocessed", model, _day(event.time), f"audio/{digest}.wav")
        payload, ref = _payload("audio/wav", body, key, cfg, offload)
        out |= {"features": a.features, "sample_rate": a.sample_rate,
                "samples": int(a.samples.size), "payload": payload}
    elif modality == "image":
        im = preprocess_image(bytes(data), event.datacontenttype, cfg.image)
        body = encode_png(im.pixels)
        key = partition_key("preprocessed", model, _day(event.time), f"image/{digest}.png")
        payload, ref = _payload("image/png", body, key, cfg, offload)
        out |= {"features": im.features, "shape": list(im.pixels.shape),
                "mode": cfg.image.mode, "letterbox": im.letterbox, "payload": payload}
    else:
        raise Rejected(Rejected.INVALID_EVENT, f"unknown modality {modality!r}")
    extensions = {"model": model, "modality": modality} | ({DATAREF: ref} if ref else {})
    return events.Event(
        id=event.id, source=SOURCE, type=PREPROCESSED, data=out, time=event.time,
        datacontenttype=events.JSON, subject=event.subject, extensions=extensions,
    )


@dataclass(frozen=True)
class Outcome:
    """What one raw Kafka record becomes: a record for ``topic`` (output or dead letter)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    reason: str | None = None
    """Set for dead letters."""


def process_kafka_record(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | Mapping[str, bytes | None] | None,
    *,
    modality: str,
    source_topic: str,
    output_topic: str,
    deadletter_topic: str,
    cfg: PreprocessConfig,
    offload: Offload | None = None,
    partition: int | None = None,
    offset: int | None = None,
    resolve: Resolve | None = None,
) -> Outcome:
    """A raw Kafka record → the preprocessed record, or a dead letter carrying the reason
    and where the record was read (topic, partition, offset)."""
    hdrs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
    hdrs = [(k, v if v is not None else b"") for k, v in hdrs]
    try:
        try:
            event = events.from_kafka(value, hdrs)
        except DriftloopError as e:
            raise Rejected(Rejected.INVALID_EVENT, e.message) from e
        out = preprocess_event(event, modality, cfg, offload, resolve)
        rec = events.to_kafka(out, key=out.extensions["model"])
        size = record_size(rec.key, rec.value, rec.headers)
        if size > cfg.max_record_bytes:
            raise Rejected(Rejected.TOO_LARGE, f"preprocessed record of {size} bytes is over "
                           f"the {cfg.max_record_bytes}-byte record limit")
    except Rejected as r:
        dl = dead_letter(value, hdrs, reason=f"{r.reason}: {r.detail}",
                         origin=Origin(source_topic, partition, offset),
                         key=dict(hdrs).get("ce_model") or None,
                         max_value_bytes=cfg.max_dead_letter_value_bytes)
        return Outcome(deadletter_topic, dl.key, dl.value, dl.headers, reason=r.reason)
    return Outcome(output_topic, rec.key, rec.value, rec.headers)
