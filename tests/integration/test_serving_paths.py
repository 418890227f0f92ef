"""The other ways in: the CLI, batch over the blob store, streaming from Kafka."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from driftloop import bus, events, topics
from driftloop.blob import open_store
from driftloop.events import PREPROCESSED
from driftloop.serving.batch import run_batch
from driftloop.serving.models import digits
from driftloop.serving.stream import StreamPredictor
from tests.fixtures.serving import LINES, astronaut_png, digit_png, render_text_png

pytestmark = pytest.mark.integration
CLI = str(Path(sys.executable).parent / "driftloop")


def run_cli(mlserver, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **mlserver.env()}
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=60)


def test_cli_predict_json_for_each_family(mlserver, speech_set, tmp_path):
    files = {
        "speech": ("a.wav", speech_set[0][1]),
        "ocr": ("line.png", render_text_png(LINES[1])),
        "faces": ("astronaut.png", astronaut_png()),
        "digits": ("seven.png", digit_png(digits.load_dataset().X[7])),
    }
    for model, (name, data) in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        r = run_cli(mlserver, "predict", "--model", model, str(path), "--json")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert set(out) == {"id", "model", "version", "output"}
        assert out["model"] == model and out["version"] == mlserver.registry.alias(model,
                                                                                    "champion")
        uuid.UUID(out["id"])
        if model in ("speech", "ocr"):
            assert isinstance(out["output"]["text"], str) and out["output"]["text"]
        if model == "faces":
            assert len(out["output"]["boxes"][0]) == 4
            assert out["output"]["labels"] == ["face"]
            assert len(out["output"]["scores"]) == 1
        if model == "digits":
            assert out["output"]["label"] == 7


def test_cli_predict_json_tensor_and_bad_file(mlserver, tmp_path):
    tensor = tmp_path / "x.json"
    tensor.write_text(json.dumps(digits.load_dataset().X[:2].tolist()))
    r = run_cli(mlserver, "predict", "--model", "digits", str(tensor), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["output"]["labels"] == [0, 1]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    r = run_cli(mlserver, "predict", "--model", "ocr", str(bad))
    assert r.returncode == 2 and "image" in r.stderr


def test_cli_models_json(mlserver):
    r = run_cli(mlserver, "models", "--json")
    assert r.returncode == 0, r.stderr
    rows = {m["name"]: m for m in json.loads(r.stdout)["models"]}
    assert {"speech", "ocr", "faces", "digits"} <= set(rows)
    assert rows["speech"]["task"] == "speech-to-text"
    assert rows["ocr"]["task"] == "ocr"
    assert rows["faces"]["task"] == "object-detection"
    assert rows["digits"]["aliases"]["champion"] in [v["version"] for v in
                                                     rows["digits"]["versions"]]
    assert rows["digits"]["versions"][0]["metrics"]["accuracy"] > 0.95


def test_batch_predict_is_resumable(mlserver, kafka):
    store = open_store(mlserver.settings.resolved_blob_url, mlserver.settings)
    d = digits.load_dataset()
    prefix = f"batch-{uuid.uuid4().hex[:8]}"
    for i in range(6):
        store.put(f"{prefix}/in/{i}.png", digit_png(d.X[i]))
    store.put(f"{prefix}/in/broken.png", b"\x89PNG\r\n\x1a\nbroken")
    first = run_batch(mlserver.settings, "digits", f"{prefix}/in", f"{prefix}/out",
                      progress=False)
    assert (first.done, first.rejected, first.failed, first.skipped) == (6, 1, 0, 0)
    result = json.loads(store.get(f"{prefix}/out/3.png.json"))
    assert result["output"]["label"] == 3 and result["input"] == f"{prefix}/in/3.png"
    assert "image" in json.loads(store.get(f"{prefix}/out/broken.png.error.json"))["error"]
    # the server emitted a prediction event under each stored prediction's id
    ids = {json.loads(store.get(k))["id"] for k in store.list(f"{prefix}/out/")
           if not k.endswith(".error.json")}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen = {e.id for e in kafka.read_events(topics.PREDICTIONS)} & ids
        if seen == ids:
            break
        time.sleep(0.5)
    assert seen == ids and len(ids) == 6
    store.put(f"{prefix}/in/6.png", digit_png(d.X[6]))
    again = run_batch(mlserver.settings, "digits", f"{prefix}/in", f"{prefix}/out",
                      progress=False)
    assert (again.done, again.skipped) == (1, 7)
    # the CLI runs the same code
    r = run_cli(mlserver, "predict", "--model", "digits", "--batch", f"{prefix}/in",
                "--out", f"{prefix}/out", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["skipped"] == 8


def test_streaming_preprocessed_and_raw_inputs_to_predictions(mlserver, kafka):
    s = mlserver.settings
    topic = topics.preprocessed("image")
    png = render_text_png(LINES[2])
    pre = events.new_event(PREPROCESSED, "test/flink", {
        "model": "ocr", "modality": "image",
        "payload": {"content_type": "image/png", "encoding": "base64", "bytes": len(png),
                    "data": base64.b64encode(png).decode()}}, model="ocr", modality="image")
    store = open_store(s.resolved_blob_url, s)
    store.put("preprocessed/model=faces/date=2026-01-01/image/a.png", astronaut_png())
    blob = events.new_event(PREPROCESSED, "test/flink", {
        "model": "faces", "modality": "image",
        "payload": {"content_type": "image/png", "encoding": "blob",
                    "blob_key": "preprocessed/model=faces/date=2026-01-01/image/a.png"}},
        model="faces", modality="image")
    raw = events.new_event(events.INPUT, "test/app", digit_png(digits.load_dataset().X[4]),
                           datacontenttype="image/png", model="digits")
    poison = events.new_event(events.INPUT, "test/app", b"\x89PNG\r\n\x1a\nbroken",
                              datacontenttype="image/png", model="ocr")
    producer = bus.make_producer(s)
    for e in (pre, blob, raw, poison):
        bus.send_event(producer, topic, e, key=e.extensions["model"])
    producer.flush()
    producer.close()

    predictor = StreamPredictor(
        s.model_copy(update={"serving_stream_group": f"t-{uuid.uuid4().hex[:8]}",
                             "serving_url": mlserver.url}),
        topic_names=[topic])
    thread = threading.Thread(target=predictor.run, daemon=True)
    thread.start()
    # The predictor's group reads the whole topic, other tests' records included: wait for
    # this test's four records by id rather than counting everything it processed.
    mine = {pre.id, blob.id, raw.id}

    def outputs() -> tuple[dict, list]:
        preds = {e.id: e for e in kafka.read_events(topics.PREDICTIONS)
                 if e.source == "driftloop/serving/stream" and e.id in mine}
        dead = [r for r in kafka.read_records(topics.DEADLETTER)
                if dict(r.headers).get("ce_id") == poison.id.encode()]
        return preds, dead

    try:
        deadline = time.monotonic() + 90
        preds, dead = outputs()
        while time.monotonic() < deadline and (len(preds) < 3 or not dead):
            time.sleep(0.5)
            preds, dead = outputs()
    finally:
        predictor.stop_event.set()
        thread.join(timeout=20)
    assert set(preds) == mine
    assert predictor.processed >= 3 and predictor.dead_lettered >= 1
    assert "Kafka" in preds[pre.id].data["output"]["text"]
    assert len(preds[blob.id].data["output"]["boxes"]) == 1
    assert preds[blob.id].data["input_ref"].endswith("a.png")
    assert preds[raw.id].data["output"]["label"] == 4
    assert preds[raw.id].data["version"] == mlserver.registry.alias("digits", "champion")
    assert len(dead) == 1
    assert b"image" in dict(dead[0].headers)["dl_reason"]
