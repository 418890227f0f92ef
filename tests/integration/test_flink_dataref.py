"""Inputs by reference (claim check) through the real Flink application, Kafka and S3.

The client writes an input above ``raw_input_dataref_bytes`` to the blob store (a real S3
server) and sends an event that carries only ``dataref``; an app whose bytes already sit in
the store sends the reference itself. Preprocess reads the bytes from S3 and emits the same
record the inline bytes give; references it cannot follow are dead-lettered with the reason
and keep the reference. The inline path is ``test_flink_pipelines``' preprocess test.
"""

from __future__ import annotations

import io
import uuid

import numpy as np
import pytest
from PIL import Image
from scipy.io import wavfile

from driftloop import bus, topics
from driftloop import events as ev
from driftloop.blob import open_store
from driftloop.client.inputs import InputSender
from flink.jobs.preprocess import preprocess_config
from flink.transforms.records import preprocess_event
from tests.fixtures.flink import FlinkApp, read_events, wait_for

pytestmark = pytest.mark.integration


def clip(seconds: float) -> bytes:
    rate = 44100
    t = np.arange(int(rate * seconds)) / rate
    buf = io.BytesIO()
    wavfile.write(buf, rate, (0.25 * np.sin(2 * np.pi * 300 * t) * 32767).astype(np.int16))
    return buf.getvalue()


def photo() -> bytes:
    rng = np.random.default_rng(3)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (480, 640, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def by_id(app: FlinkApp, topic: str, ids: set[str]) -> dict[str, tuple[ev.Event, dict]]:
    return {e.id: (e, h) for e, h in read_events(app.settings.kafka_bootstrap, topic)
            if e.id in ids}


def test_inputs_by_reference_are_read_from_s3_and_bad_references_dead_lettered(
    flink_app: FlinkApp,
) -> None:
    run = uuid.uuid4().hex[:8]
    settings = flink_app.settings.model_copy(update={"raw_input_dataref_bytes": 64 * 1024})
    big_audio, big_image, small_audio = clip(2.0), photo(), clip(0.3)
    assert len(small_audio) < 64 * 1024 < min(len(big_audio), len(big_image))

    sender = InputSender("tests/dataref", settings)
    try:
        ids = {
            "audio": sender.send("speech", big_audio, content_type="audio/wav",
                                 id=f"ref-a-{run}"),
            "image": sender.send("ocr", big_image, content_type="image/png", id=f"ref-i-{run}"),
            "small": sender.send("speech", small_audio, content_type="audio/wav",
                                 id=f"inl-a-{run}"),
        }
    finally:
        sender.close()

    # On the raw topic: the big inputs as references into S3, the small one inline.
    raw = {e.id: (e, h) for m in ("audio", "image")
           for e, h in read_events(settings.kafka_bootstrap, topics.raw(m))
           if e.id.endswith(run)}
    store = open_store(settings.resolved_blob_url, settings)
    for name in ("audio", "image"):
        e, headers = raw[ids[name]]
        assert e.data is None  # no value: the bytes are only in the store
        ref = e.extensions[ev.DATAREF]
        assert headers["ce_dataref"].decode() == ref
        assert ref.startswith(f"{store.url}/raw/model=")
        assert store.get(ref[len(store.url) + 1:]) == (big_audio if name == "audio"
                                                       else big_image)
    assert raw[ids["small"]][0].data == small_audio
    assert ev.DATAREF not in raw[ids["small"]][0].extensions

    # An app whose bytes already sit in the store sends the reference itself; bad ones.
    store.put(f"apps/{run}/clip.wav", big_audio)
    own = ev.new_event(ev.INPUT, "tests/dataref", None, id=f"own-{run}",
                       datacontenttype="audio/wav", model="speech",
                       **{ev.DATAREF: f"{store.url}/apps/{run}/clip.wav"})
    poison = {
        f"gone-{run}": (f"{store.url}/apps/{run}/never-written.wav", "missing_blob"),
        f"out-{run}": ("file:///etc/passwd", "invalid_event"),
        f"dots-{run}": (f"{store.url}/apps/../../checkpoints/x", "invalid_event"),
    }
    producer = bus.make_producer(settings)
    bus.publish(producer, topics.raw("audio"), [own] + [
        ev.new_event(ev.INPUT, "tests/dataref", None, id=i, datacontenttype="audio/wav",
                     model="speech", **{ev.DATAREF: ref})
        for i, (ref, _) in poison.items()], key="speech")
    producer.close()

    want_audio = {ids["audio"], ids["small"], own.id}
    audio = wait_for(lambda: (lambda r: r if len(r) == len(want_audio) else None)(
        by_id(flink_app, topics.preprocessed("audio"), want_audio)),
        timeout_s=120, what="preprocessed audio by reference")
    images = wait_for(lambda: by_id(flink_app, topics.preprocessed("image"), {ids["image"]}),
                      timeout_s=60, what="preprocessed image by reference")

    # The same record the inline bytes give (features, geometry, payload size).
    cfg = preprocess_config(settings)
    for got, body, modality, model, ct in (
        (audio[ids["audio"]][0], big_audio, "audio", "speech", "audio/wav"),
        (audio[own.id][0], big_audio, "audio", "speech", "audio/wav"),
        (images[ids["image"]][0], big_image, "image", "ocr", "image/png"),
    ):
        inline = preprocess_event(ev.new_event(ev.INPUT, "x", body, id=got.id,
                                               datacontenttype=ct, model=model),
                                  modality, cfg)
        assert got.data["features"] == pytest.approx(inline.data["features"])
        assert got.data["payload"]["bytes"] == inline.data["payload"]["bytes"]
        # the input's reference is not carried over: an output's own dataref (a payload
        # over the inline limit) names the preprocessed payload it wrote to the store
        pay = got.data["payload"]
        if pay["encoding"] == "blob":
            assert got.extensions[ev.DATAREF] == f"{pay['blob_url']}/{pay['blob_key']}"
            assert pay["blob_key"].startswith("preprocessed/")
            assert store.get(pay["blob_key"])[:4] in (b"RIFF", b"\x89PNG")
        else:
            assert ev.DATAREF not in got.extensions
    assert audio[ids["small"]][0].data["features"]["duration_s"] == pytest.approx(0.3, abs=0.01)

    dead = wait_for(lambda: (lambda r: r if len(r) == len(poison) else None)(
        by_id(flink_app, topics.DEADLETTER, set(poison))), timeout_s=60, what="dead letters")
    for id_, (ref, reason) in poison.items():
        _, headers = dead[id_]
        assert headers["dl_reason"].decode().startswith(reason + ":"), headers["dl_reason"]
        assert headers["ce_dataref"].decode() == ref
        assert headers["dl_source_topic"].decode() == topics.raw("audio")
