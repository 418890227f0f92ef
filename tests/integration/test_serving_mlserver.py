"""Speech, OCR, faces and digits through a real MLServer (registry on the real S3 server,
events to the real Kafka broker), on inputs whose truth is known (objects: its own file)."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from driftloop import events, quality, topics
from driftloop.serving import v2
from driftloop.serving.models import digits
from tests.fixtures.serving import (
    ASTRONAUT_FACE,
    LINES,
    astronaut_png,
    digit_png,
    render_text_png,
)

pytestmark = pytest.mark.integration

FIGURES: dict[str, float] = {}


def test_speech_to_text_word_error_rate(mlserver, speech_set):
    with mlserver.client() as c:
        rates = []
        for sentence, wav in speech_set:
            pred = c.infer_bytes("speech", wav)
            assert isinstance(pred.output["text"], str)
            assert 0.0 <= pred.output["confidence"] <= 1.0
            rates.append(quality.wer(sentence, pred.output["text"]))
    FIGURES["speech_wer"] = sum(rates) / len(rates)
    print(f"speech WER {FIGURES['speech_wer']:.3f} over {len(rates)} flite sentences")
    assert FIGURES["speech_wer"] <= 0.25


def test_ocr_character_error_rate(mlserver):
    with mlserver.client() as c:
        rates = []
        for line in LINES:
            pred = c.infer_bytes("ocr", render_text_png(line))
            assert len(pred.output["boxes"]) == len(pred.output["labels"])
            assert all(len(b) == 4 for b in pred.output["boxes"])
            rates.append(quality.cer(line, pred.output["text"]))
    FIGURES["ocr_cer"] = sum(rates) / len(rates)
    print(f"OCR CER {FIGURES['ocr_cer']:.4f} over {len(rates)} rendered lines")
    assert FIGURES["ocr_cer"] <= 0.05


def test_face_detection_iou_on_astronaut(mlserver):
    with mlserver.client() as c:
        pred = c.infer_bytes("faces", astronaut_png())
    boxes = pred.output["boxes"]
    assert pred.output["labels"] == ["face"] * len(boxes)
    assert all(0.0 < s <= 1.0 for s in pred.output["scores"])
    assert len(boxes) == 1, boxes  # one face, no false positives
    FIGURES["faces_iou"] = quality.mean_iou(boxes, [ASTRONAUT_FACE])
    print(f"faces IoU {FIGURES['faces_iou']:.3f} (box {boxes[0]}, truth {ASTRONAUT_FACE})")
    assert FIGURES["faces_iou"] >= 0.6


def test_digits_holdout_accuracy(mlserver):
    _, holdout = digits.split(digits.load_dataset())
    with mlserver.client() as c:
        pred = c.infer_tensor("digits", holdout.X.tolist(), datatype="FP32")
        assert pred.version == mlserver.registry.alias("digits", "champion")
        labels = pred.output["labels"]
        FIGURES["digits_accuracy"] = float((labels == holdout.y).mean())
        # The same model through images (a PNG per digit, as an app would send).
        hits = [c.infer_bytes("digits", digit_png(x)).output["label"] == int(y)
                for x, y in zip(holdout.X[:30], holdout.y[:30], strict=True)]
    print(f"digits accuracy {FIGURES['digits_accuracy']:.4f} on {len(labels)} holdout rows; "
          f"{sum(hits)}/30 as PNG images")
    assert FIGURES["digits_accuracy"] >= 0.97
    assert sum(hits) >= 27


def test_prediction_id_in_body_and_headers(mlserver):
    wanted = f"req-{uuid.uuid4()}"
    with httpx.Client(base_url=mlserver.url, timeout=30) as h:
        r = h.post("/v2/models/faces/infer", json=v2.media_request(astronaut_png()),
                   headers={"x-request-id": wanted})
        assert r.status_code == 200
        assert r.json()["id"] == wanted
        assert r.headers["x-request-id"] == wanted and r.headers["ce-id"] == wanted
        r = h.post("/v2/models/faces/infer", json=v2.media_request(astronaut_png()))
        assert r.headers["x-request-id"] == r.json()["id"]


def test_prediction_events_reach_kafka_under_the_returned_id(mlserver, kafka):
    with mlserver.client() as c:
        preds = [c.infer_bytes("ocr", render_text_png(LINES[0])),
                 c.infer_tensor("digits", digits.load_dataset().X[:1].tolist()),
                 c.infer_bytes("faces", astronaut_png())]
    wanted = {p.id: p for p in preds}
    deadline = time.monotonic() + 30
    found: dict[str, events.Event] = {}
    while time.monotonic() < deadline and set(found) != set(wanted):
        found = {e.id: e for e in kafka.read_events(topics.PREDICTIONS) if e.id in wanted}
        time.sleep(0.5)
    assert set(found) == set(wanted)
    for pid, e in found.items():
        assert e.type == events.PREDICTION
        data = events.PredictionData.parse(e.data)
        assert data.model == wanted[pid].model
        assert data.version == wanted[pid].version
        assert data.output == dict(wanted[pid].output)
        assert data.latency_ms is not None and data.latency_ms > 0


BAD = [
    ("speech", {"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1],
                            "parameters": {"content_type": "base64"}, "data": [""]}]},
     400, "empty"),
    ("speech", v2.media_request(b"RIFF\x10\x00\x00\x00WAVEfmt garbage"), 400, "WAV"),
    ("speech", v2.media_request(b"\x89PNG\r\n\x1a\nnot really"), 400, "WAV"),
    ("ocr", v2.media_request(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64), 400, "image"),
    ("faces", v2.media_request(b"\xff\xd8\xff\xe0 truncated jpeg"), 400, "image"),
    ("faces", v2.media_request(b"plain text, not an image"), 415, "PNG or JPEG"),
    ("digits", v2.tensor_request([[1.0, 2.0, 3.0]]), 400, "shape"),
    ("digits", {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64],
                            "data": [1.0] * 10}]}, 400, "shape"),
    ("digits", {"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1],
                            "parameters": {"content_type": "base64"},
                            "data": ["%%%not base64%%%"]}]}, 400, "base64"),
    ("digits", {"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]},
                           {"name": "b", "datatype": "FP32", "shape": [1], "data": [1]}]},
     400, "one input"),
    ("ocr", v2.media_request(b"\x89PNG\r\n\x1a\n" + b"\x00" * (3 * 1024 * 1024)), 413,
     "limit"),
]


@pytest.mark.parametrize(("model", "body", "status", "needle"), BAD,
                         ids=[f"{m}-{i}" for i, (m, *_rest) in enumerate(BAD)])
def test_bad_inputs_get_4xx_with_a_message(mlserver, model, body, status, needle):
    r = httpx.post(f"{mlserver.url}/v2/models/{model}/infer", json=body, timeout=30)
    assert r.status_code == status, r.text
    assert needle.lower() in r.json()["error"].lower()


def test_too_long_audio_is_413(mlserver, tmp_path):
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x00" * 16000 * 31)
    r = httpx.post(f"{mlserver.url}/v2/models/speech/infer",
                   json=v2.media_request(buf.getvalue()), timeout=30)
    assert r.status_code == 413 and "limit" in r.json()["error"]


def test_unknown_model_is_404(mlserver):
    r = httpx.post(f"{mlserver.url}/v2/models/nope/infer", json=v2.tensor_request([1.0]))
    assert r.status_code == 404


def test_metrics_per_model_and_version(mlserver):
    with mlserver.client() as c:
        c.infer_tensor("digits", digits.load_dataset().X[:1].tolist())
    httpx.post(f"{mlserver.url}/v2/models/digits/infer", json=v2.tensor_request([[1.0]]))
    text = httpx.get(mlserver.process.metrics_url, timeout=10).text
    v = mlserver.registry.alias("digits", "champion")
    assert f'driftloop_model_latency_seconds_count{{model="digits",version="{v}"}}' in text
    assert f'driftloop_model_errors_total{{model="digits",status="400",version="{v}"}}' in text
    assert 'driftloop_model_outputs_total{model="digits",output="' in text
    assert "driftloop_prediction_events_sent_total" in text
    assert "driftloop_prediction_events_dropped_total" in text or \
        "driftloop_prediction_events_queued" in text


def test_switching_the_champion_changes_the_answering_version_without_restart(mlserver):
    reg = mlserver.registry
    pid = mlserver.process.pid
    old = reg.alias("digits", "champion")
    train, holdout = digits.split(digits.load_dataset())
    artifact = digits.train(train, {"kind": "logreg", "C": 0.5})
    new = reg.register("digits", artifact, metrics=digits.evaluate(artifact, holdout),
                       lineage={"test": "champion switch"}, parent=old).version
    x = holdout.X[:5].tolist()
    with mlserver.client() as c:
        try:
            reg.set_alias("digits", "challenger", new, reason="canary")
            c.load("digits")
            assert c.infer_tensor("digits", x).version == old
            assert c.infer_tensor("digits", x, version=new).version == new
            # canary: the challenger answers its share of the champion's requests
            reg.set_challenger_weight("digits", 50)
            c.load("digits")
            answered = [c.infer_tensor("digits", x).version for _ in range(40)]
            assert set(answered) == {old, new}, answered
            reg.set_challenger_weight("digits", 0)
            c.load("digits")
            assert {c.infer_tensor("digits", x).version for _ in range(10)} == {old}
            reg.set_alias("digits", "champion", new, reason="promoted")
            reg.clear_alias("digits", "challenger")
            c.load("digits")
            assert c.infer_tensor("digits", x).version == new
            # the old version is no longer aliased, so it was unloaded
            r = httpx.post(f"{mlserver.url}/v2/models/digits/versions/{old}/infer",
                           json=v2.tensor_request(x))
            assert r.status_code == 404
        finally:
            reg.set_alias("digits", "champion", old, reason="restore after test")
            reg.clear_alias("digits", "challenger")
            c.load("digits")
        assert c.infer_tensor("digits", x).version == old
    assert mlserver.process.pid == pid
    assert [h.version for h in reg.history("digits", "champion")][-3:] == [old, new, old][-3:]


def test_quality_figures_recorded(tmp_path_factory):
    """Writes the figures measured above to reports/serving-quality.json (for the notes)."""
    from pathlib import Path

    out = Path("reports")
    out.mkdir(exist_ok=True)
    (out / "serving-quality.json").write_text(json.dumps(FIGURES, indent=1))
    assert FIGURES
