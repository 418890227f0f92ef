"""Synthetic raw inputs sent through the running preprocess job, watched coming out.

Tones at several sample rates and gradient images in PNG and JPEG go to the raw topics;
their preprocessed records are read back from ``driftloop.preprocessed.*`` by event id.
``driftloop flink send-samples`` and the demo's preprocess step both use
``publish_samples`` then ``await_preprocessed``, which reports each record through
``on_record`` and returns the ids still missing: the caller decides what a miss means.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from driftloop import bus, events, topics
from driftloop.catalogue import FAMILIES
from driftloop.settings import Settings

__all__ = ["RawSample", "await_preprocessed", "describe", "publish_samples", "sample_inputs"]


@dataclass(frozen=True)
class RawSample:
    """One raw input as an app would send it."""

    modality: str
    data: bytes
    content_type: str
    model: str


def _first_family(modality: str) -> str:
    return next(name for name, f in FAMILIES.items() if f.modality == modality)


def sample_inputs(n_audio: int, n_images: int) -> list[RawSample]:
    """Tones at 8/16/22.05/44.1 kHz and gradient PNG/JPEG images, each for the first
    catalogue family of its modality (speech and ocr)."""
    import io

    import numpy as np
    from PIL import Image
    from scipy.io import wavfile

    audio_model, image_model = (_first_family(m) for m in ("audio", "image"))
    out = []
    for i in range(n_audio):
        rate = (8000, 16000, 22050, 44100)[i % 4]
        t = np.arange(rate) / rate
        buf = io.BytesIO()
        wavfile.write(
            buf, rate, (0.1 * (i + 1) * np.sin(2 * np.pi * 330 * t) * 32767).astype(np.int16)
        )
        out.append(RawSample("audio", buf.getvalue(), "audio/wav", audio_model))
    for i in range(n_images):
        arr = np.tile(np.linspace(0, 255, 160 + 20 * i).astype(np.uint8), (120, 1))
        buf = io.BytesIO()
        png = i % 2 == 0
        Image.fromarray(arr).save(buf, format="PNG" if png else "JPEG")
        out.append(
            RawSample("image", buf.getvalue(), "image/png" if png else "image/jpeg", image_model)
        )
    return out


def describe(topic: str, event: events.Event) -> str:
    """One line for a preprocessed record: its topic, short id and first four features."""
    f = event.data["features"]
    shown = ", ".join(f"{k}={v:.3g}" for k, v in list(f.items())[:4])
    return f"  {topic}: {event.id[:8]} {shown}"


def publish_samples(
    settings: Settings, *, audio: int, images: int, source: str = "driftloop/samples"
) -> set[str]:
    """Send ``audio`` clips and ``images`` to the raw topics; return their event ids."""
    producer = bus.make_producer(settings)
    ids: set[str] = set()
    try:
        for s in sample_inputs(audio, images):
            ev = events.new_event(
                events.INPUT,
                source,
                s.data,
                id=str(uuid.uuid4()),
                datacontenttype=s.content_type,
                model=s.model,
            )
            bus.publish(producer, topics.raw(s.modality), [ev], key=bus.input_key(ev))
            ids.add(ev.id)
    finally:
        producer.close()
    return ids


def await_preprocessed(
    settings: Settings,
    ids: set[str],
    *,
    wait_s: float,
    on_record: Callable[[str, events.Event], None],
    client: str = "preprocess-samples",
) -> set[str]:
    """Call ``on_record(topic, event)`` for each preprocessed record of ``ids`` seen
    within ``wait_s``; return the ids not seen (empty when all were)."""
    from kafka import KafkaConsumer

    missing = set(ids)
    consumer = KafkaConsumer(
        *(topics.preprocessed(m) for m in topics.MODALITIES),
        **bus.client_config(settings, client),
        group_id=None,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    deadline = time.monotonic() + wait_s
    try:
        while missing and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=500).values():
                for r in recs:
                    ev = events.from_kafka(r.value, r.headers, r.key)
                    if ev.id in missing:
                        missing.discard(ev.id)
                        on_record(r.topic, ev)
    finally:
        consumer.close()
    return missing
