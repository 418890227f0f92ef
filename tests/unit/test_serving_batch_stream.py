"""Pure parts of batch (planning, stable ids) and streaming (record parsing)."""

from __future__ import annotations

import base64

import pytest

from driftloop import events
from driftloop.blob import FileStore
from driftloop.errors import BadRequest
from driftloop.events import PREPROCESSED
from driftloop.serving.batch import plan, prediction_id
from driftloop.serving.stream import parse_record, prediction_event
from driftloop.serving.v2 import Prediction


def test_plan_skips_done_and_rejected_inputs(tmp_path):
    store = FileStore(tmp_path)
    for name in ("a.png", "b.png", "c.png", "sub/d.png"):
        store.put(f"in/{name}", b"x")
    store.put("out/a.png.json", b"{}")
    store.put("out/b.png.error.json", b"{}")
    todo, skipped = plan(store, "in", "out/")
    assert todo == ["in/c.png", "in/sub/d.png"] and skipped == 2


def test_prediction_ids_are_stable_per_model_and_input():
    a = prediction_id("s3://b/p", "digits", "in/a.png")
    assert a == prediction_id("s3://b/p", "digits", "in/a.png")
    assert a != prediction_id("s3://b/p", "ocr", "in/a.png")


def test_parse_preprocessed_inline_blob_and_raw(tmp_path):
    store = FileStore(tmp_path)
    inline = events.new_event(PREPROCESSED, "f", {"model": "ocr", "payload": {
        "encoding": "base64", "data": base64.b64encode(b"PNG").decode()}}, modality="image")
    got = parse_record(inline, store)
    assert (got.id, got.model, got.media, got.modality) == (inline.id, "ocr", b"PNG", "image")
    store.put("pre/x.wav", b"WAV")
    blob = events.new_event(PREPROCESSED, "f", {"model": "speech", "payload": {
        "encoding": "blob", "blob_key": "pre/x.wav"}}, model="speech")
    assert parse_record(blob, store).media == b"WAV"
    assert parse_record(blob, store).input_ref == "pre/x.wav"
    raw = events.new_event(events.INPUT, "app", b"JPEG", datacontenttype="image/jpeg",
                           model="faces")
    assert parse_record(raw, store).media == b"JPEG"


@pytest.mark.parametrize("event", [
    events.new_event(events.INPUT, "app", b"x", datacontenttype="image/png"),
    events.new_event(events.INPUT, "app", b"x", datacontenttype="image/png", model="../x"),
    events.new_event(events.FEEDBACK, "app", {"model": "ocr"}, model="ocr"),
    events.new_event(PREPROCESSED, "f", {"model": "ocr"}, model="ocr"),
    events.new_event(PREPROCESSED, "f", {"payload": {"encoding": "base64", "data": "!"}},
                     model="ocr"),
    events.new_event(PREPROCESSED, "f", {"payload": {"encoding": "blob", "blob_key": "nope"}},
                     model="ocr"),
    events.new_event(PREPROCESSED, "f", {"payload": {"encoding": "zip"}}, model="ocr"),
])
def test_unusable_records_are_bad_requests(event, tmp_path):
    with pytest.raises(BadRequest):
        parse_record(event, FileStore(tmp_path))


def test_prediction_event_keeps_the_input_id():
    raw = events.new_event(events.INPUT, "app", b"x", model="digits")
    inp = parse_record(raw, None)
    e = prediction_event(inp, Prediction("other", "digits", "3", {"label": 1}), 12.5)
    assert e.id == raw.id and e.type == events.PREDICTION
    data = events.PredictionData.parse(e.data)
    assert (data.model, data.version, data.output, data.latency_ms) == ("digits", "3",
                                                                       {"label": 1}, 12.5)


def test_batch_records_every_4xx_as_rejected_and_retries_server_errors(tmp_path):
    import json

    from driftloop.errors import InferenceTimeout, PayloadTooLarge, UnsupportedMediaType
    from driftloop.serving.batch import _one

    class Refusing:
        def __init__(self, error: Exception) -> None:
            self.error = error

        def infer_bytes(self, *args, **kwargs):
            raise self.error

    store = FileStore(tmp_path)
    store.put("in/bomb.png", b"x")
    for error in (PayloadTooLarge("faces inference: image is over the limit of 40 pixels"),
                  UnsupportedMediaType("faces inference: expected a PNG or JPEG image")):
        assert _one(store, Refusing(error), "faces", None, "in/bomb.png", "in/", "out/") \
            == "rejected"
        saved = json.loads(store.get("out/bomb.png.error.json"))
        assert saved["status"] == error.status and saved["error"] == error.message
    with pytest.raises(InferenceTimeout):
        _one(store, Refusing(InferenceTimeout("slow")), "faces", None, "in/bomb.png", "in/",
             "out/")
