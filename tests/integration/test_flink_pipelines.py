"""The Flink application against real Kafka and a real S3 server: preprocess, join, archive.

All tests share one application, submitted to a real standalone session cluster (one
JobManager, one TaskManager) as the local stack runs it; Prometheus scrapes both. The last
test kills every process (SIGKILL) mid-stream and checks the archive and the labeled topic
hold every record exactly once afterwards.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import numpy as np
import pytest
import yaml
from PIL import Image
from scipy.io import wavfile

from driftloop import bus, events, topics
from driftloop.blob import open_store
from driftloop.events import PREPROCESSED
from driftloop.labeled import labeled_id
from driftloop.local.components.flink import components as flink_components
from driftloop.local.components.flink import job_health, settings_env
from driftloop.local.process import free_port, http_ok, spawn, stop_pid, wait_until
from driftloop.settings import PROJECT_ROOT
from flink.jobs.common import flink_path
from tests.fixtures.flink import (
    JOIN_WINDOW_S,
    FlinkApp,
    read_committed,
    read_events,
    wait_for,
)

pytestmark = pytest.mark.integration

TOLERANCE_DB = 0.5


def wav(rate: int, seconds: float, *, channels: int = 1, amp: float = 0.3, freq: float = 440.0,
        dtype: str = "int16") -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    x = amp * np.sin(2 * np.pi * freq * t)
    if channels > 1:
        x = np.repeat(x[:, None], channels, axis=1)
    buf = io.BytesIO()
    data = (x * 32767).astype(np.int16) if dtype == "int16" else x.astype(np.float32)
    wavfile.write(buf, rate, data)
    return buf.getvalue()


def image(w: int, h: int, fmt: str, noise: bool = False) -> bytes:
    rng = np.random.default_rng(w * h)
    arr = (rng.integers(0, 255, (h, w, 3), np.uint8) if noise
           else np.full((h, w, 3), 90, np.uint8))
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def raw(data: bytes, ct: str, model: str, id_: str) -> events.Event:
    return events.new_event(events.INPUT, "tests/flink", data, id=id_, datacontenttype=ct,
                            model=model)


def by_id(app: FlinkApp, topic: str, ids: set[str]) -> dict[str, tuple[events.Event, dict]]:
    out = {}
    for ev, headers in read_events(app.settings.kafka_bootstrap, topic):
        if ev.id in ids:
            out[ev.id] = (ev, headers)
    return out


def decode_payload(app: FlinkApp, payload: dict) -> bytes:
    if payload["encoding"] == "base64":
        return base64.b64decode(payload["data"])
    store = open_store(payload["blob_url"], app.settings)
    return store.get(payload["blob_key"])


def test_preprocess_audio_and_images_with_dead_letters(flink_app: FlinkApp) -> None:
    run = uuid.uuid4().hex[:8]
    audio_cases = {
        f"a16k-{run}": (wav(16000, 1.0), 1.0),
        f"a44st-{run}": (wav(44100, 2.0, channels=2), 2.0),
        f"a8kf-{run}": (wav(8000, 0.5, dtype="float32", amp=0.05), 0.5),
        f"a48-{run}": (wav(48000, 1.5, amp=0.8), 1.5),
    }
    image_cases = {
        f"ipng-{run}": (image(320, 200, "PNG"), "image/png", (320, 200)),
        f"ijpg-{run}": (image(100, 300, "JPEG"), "image/jpeg", (100, 300)),
        f"ibig-{run}": (image(400, 400, "PNG", noise=True), "image/png", (400, 400)),
    }
    poison = {
        f"junk-{run}": (topics.raw("audio"), raw(b"RIFF....not audio", "audio/wav", "speech",
                                                 f"junk-{run}"), "undecodable"),
        f"empty-{run}": (topics.raw("image"), raw(b"", "image/png", "ocr", f"empty-{run}"),
                         "empty"),
        f"ct-{run}": (topics.raw("audio"), raw(image(10, 10, "PNG"), "image/png", "speech",
                                               f"ct-{run}"), "wrong_content_type"),
        f"model-{run}": (topics.raw("image"), raw(image(10, 10, "PNG"), "image/png", "../x",
                                                  f"model-{run}"), "invalid_event"),
    }
    producer = bus.make_producer(flink_app.settings)
    bus.publish(producer, topics.raw("audio"),
                [raw(d, "audio/wav", "speech", i) for i, (d, _) in audio_cases.items()])
    bus.publish(producer, topics.raw("image"),
                [raw(d, ct, "ocr", i) for i, (d, ct, _) in image_cases.items()])
    for topic, ev, _ in poison.values():
        bus.publish(producer, topic, [ev], key="poison")
    producer.close()

    audio = wait_for(lambda: (lambda r: r if len(r) == len(audio_cases) else None)(
        by_id(flink_app, topics.preprocessed("audio"), set(audio_cases))),
        timeout_s=120, what="preprocessed audio")
    for id_, (_, seconds) in audio_cases.items():
        ev, _ = audio[id_]
        assert ev.type == PREPROCESSED and ev.extensions["model"] == "speech"
        d = ev.data
        assert d["sample_rate"] == 16000 and d["modality"] == "audio"
        assert d["features"]["duration_s"] == pytest.approx(seconds, abs=0.01)
        rate, pcm = wavfile.read(io.BytesIO(decode_payload(flink_app, d["payload"])))
        assert rate == 16000 and pcm.ndim == 1
        assert abs(pcm.size - seconds * 16000) <= 2
        x = pcm.astype(np.float64) / 32768.0
        level_db = 20 * np.log10(np.sqrt(np.mean(x**2)))
        assert abs(level_db - flink_app.settings.flink_audio_target_dbfs) < TOLERANCE_DB
        assert d["features"]["zcr"] * 16000 == pytest.approx(880, rel=0.02)
    assert audio[f"a48-{run}"][0].data["features"]["peak"] == pytest.approx(0.8, abs=0.01)
    assert audio[f"a44st-{run}"][0].data["features"]["input_channels"] == 2
    # 2 s of 16 kHz WAV is 85 KB in base64, over the 64 KiB limit: written to the S3 store by
    # the job, the record names it (claim check); 1 s stays inline
    big = audio[f"a44st-{run}"][0]
    assert big.data["payload"]["encoding"] == "blob"
    assert big.extensions[events.DATAREF] == (
        f"{big.data['payload']['blob_url']}/{big.data['payload']['blob_key']}")
    assert big.data["payload"]["blob_url"] == flink_app.settings.resolved_blob_url
    assert audio[f"a16k-{run}"][0].data["payload"]["encoding"] == "base64"
    assert events.DATAREF not in audio[f"a16k-{run}"][0].extensions

    images = wait_for(lambda: (lambda r: r if len(r) == len(image_cases) else None)(
        by_id(flink_app, topics.preprocessed("image"), set(image_cases))),
        timeout_s=60, what="preprocessed images")
    for id_, (_, _, (w, h)) in image_cases.items():
        d = images[id_][0].data
        assert d["shape"] == [224, 224, 3]
        assert (d["features"]["width"], d["features"]["height"]) == (w, h)
        pixels = np.asarray(Image.open(io.BytesIO(decode_payload(flink_app, d["payload"]))))
        assert pixels.shape == (224, 224, 3)
    assert images[f"ibig-{run}"][0].data["payload"]["encoding"] == "blob"
    assert images[f"ipng-{run}"][0].data["payload"]["encoding"] == "base64"
    assert images[f"ipng-{run}"][0].data["features"]["brightness_mean"] == pytest.approx(
        90 / 255, abs=0.01)

    dead = wait_for(lambda: (lambda r: r if len(r) == len(poison) else None)(
        by_id(flink_app, topics.DEADLETTER, set(poison))), timeout_s=60, what="dead letters")
    for id_, (topic, _, reason) in poison.items():
        _, headers = dead[id_]
        assert headers["dl_reason"].decode().startswith(reason + ":"), headers["dl_reason"]
        assert headers["dl_source_topic"].decode() == topic


def prediction(id_: str, model: str, output: dict) -> events.Event:
    return events.new_event(events.PREDICTION, "tests/serving",
                            {"model": model, "version": "v1", "output": output}, id=id_)


def feedback(pid: str, model: str, truth: object, id_: str | None = None, *,
             source: str = "tests/app", second: int | None = None) -> events.Event:
    t = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=second) if second is not None else None
    return events.new_event(events.FEEDBACK, source,
                            {"prediction_id": pid, "model": model, "truth": truth},
                            id=id_ or f"fb-{uuid.uuid4().hex[:10]}", time=t)


def labeled_by_feedback(app: FlinkApp, run: str) -> dict[tuple[str, str], events.Event]:
    """This run's labeled records by their feedback's (source, id)."""
    return {(e.data["feedback_source"], e.data["feedback_id"]): e
            for e, _ in read_events(app.settings.kafka_bootstrap, topics.LABELED)
            if str(e.data.get("prediction_id", "")).endswith(run)}


def test_join_out_of_order_duplicates_and_late(flink_app: FlinkApp) -> None:
    run = uuid.uuid4().hex[:8]
    p_first = prediction(f"p1-{run}", "ocr", {"text": "hello world"})
    f_first_fb = feedback(f"p2-{run}", "speech", "the cat sat", id_=f"f2-{run}")
    p_after = prediction(f"p2-{run}", "speech", {"text": "the cat sad"})
    f1 = feedback(f"p1-{run}", "ocr", "hello world", id_=f"f1-{run}")
    p_dup = prediction(f"p3-{run}", "digits", {"label": "7"})
    f3 = feedback(f"p3-{run}", "digits", "7", id_=f"f3-{run}")
    orphan = feedback(f"nope-{run}", "ocr", "x", id_=f"orphan-{run}")
    p = bus.make_producer(flink_app.settings)
    bus.publish(p, topics.FEEDBACK, [f_first_fb])          # feedback before its prediction
    bus.publish(p, topics.PREDICTIONS, [p_first, p_after, p_dup, p_dup])  # duplicate prediction
    bus.publish(p, topics.FEEDBACK, [f1, f3, f3, orphan])  # duplicate feedback, orphan
    expected = {f"f1-{run}": 0.0, f"f2-{run}": 1 / 3, f"f3-{run}": 1.0}

    labeled = wait_for(lambda: (lambda r: r if len(r) >= len(expected) else None)(
        labeled_by_feedback(flink_app, run)), timeout_s=90, what="labeled records")
    # The late feedback: its prediction's window has long closed when it arrives.
    late_pred = prediction(f"p4-{run}", "ocr", {"text": "late"})
    bus.publish(p, topics.PREDICTIONS, [late_pred])
    time.sleep(JOIN_WINDOW_S + 3)
    late_fb = feedback(f"p4-{run}", "ocr", "late", id_=f"late-{run}")
    bus.publish(p, topics.FEEDBACK, [late_fb])
    p.close()

    dead = wait_for(lambda: (lambda r: r if len(r) == 2 else None)(
        by_id(flink_app, topics.DEADLETTER, {f"orphan-{run}", f"late-{run}"})),
        timeout_s=JOIN_WINDOW_S * 3 + 30, what="unmatched feedback dead-lettered")
    for _, headers in dead.values():
        assert headers["dl_reason"].startswith(b"unmatched_feedback:")
        assert headers["dl_source_topic"] == topics.FEEDBACK.encode()

    labeled = [e for e, _ in read_events(flink_app.settings.kafka_bootstrap, topics.LABELED)
               if e.data.get("prediction_id", "").endswith(run)]
    # no duplicates, no late one
    assert sorted(e.data["feedback_id"] for e in labeled) == sorted(expected)
    for e in labeled:
        fid = e.data["feedback_id"]
        assert e.type == "io.driftloop.labeled.v1"
        assert e.id == labeled_id("tests/app", fid)
        assert e.data["quality"] == pytest.approx(expected[fid], abs=1e-9)
        assert e.data["prediction_id"] == fid.replace("f", "p", 1)
    metrics = {e.data["feedback_id"]: e.data["metric"] for e in labeled}
    assert metrics == {f"f1-{run}": "cer", f"f2-{run}": "wer", f"f3-{run}": "accuracy"}


def raw_record(producer, topic: str, value: bytes, headers: list) -> None:
    """A record as a careless or hostile app could write it (no validation on the way)."""
    producer.send(topic, key=b"poison", value=value, headers=headers).get(timeout=30)


def test_join_survives_poison_and_keeps_one_label_per_prediction(flink_app: FlinkApp) -> None:
    """Poison records cost one dead letter each (reason, topic, offset) and no restart;
    reused feedback ids lose nothing; corrections apply (late ones too); feedback for another
    model is dead-lettered; an oversized labeled record is dead-lettered, not retried."""
    run = uuid.uuid4().hex[:8]
    s = flink_app.settings
    p = bus.make_producer(s)
    # Poison: a prediction id equal to the join's old internal sentinel, NaN in an output,
    # a value that is no JSON at all.
    sentinel = feedback("\x00invalid", "ocr", "x", id_=f"sentinel-{run}")
    rec = events.to_kafka(sentinel)
    raw_record(p, topics.FEEDBACK, rec.value, rec.headers)
    nan_pred = prediction(f"nan-{run}", "ocr", {"text": "a"})
    rec = events.to_kafka(nan_pred)
    raw_record(p, topics.PREDICTIONS, b'{"model":"ocr","version":"v1","output":{"score":NaN}}',
               rec.headers)
    junk = prediction(f"junk-{run}", "ocr", {"text": "a"})
    raw_record(p, topics.PREDICTIONS, b"\xff\x00 not json", events.to_kafka(junk).headers)
    # Two apps reuse one feedback id for two predictions.
    preds = [prediction(f"P1-{run}", "digits", {"label": "3"}),
             prediction(f"P2-{run}", "digits", {"label": "4"}),
             prediction(f"P3-{run}", "digits", {"label": "7"}),
             prediction(f"big-{run}", "ocr", {"text": "a" * 1_200_000})]
    bus.publish(p, topics.PREDICTIONS, preds)
    a1 = feedback(f"P1-{run}", "digits", "3", "fb-1", source=f"app-a-{run}", second=1)
    b1 = feedback(f"P2-{run}", "digits", "4", "fb-1", source=f"app-b-{run}", second=1)
    corr = feedback(f"P1-{run}", "digits", "5", "fb-2", source=f"app-a-{run}", second=5)
    stale = feedback(f"P1-{run}", "digits", "9", "fb-0", source=f"app-a-{run}", second=0)
    other = feedback(f"P3-{run}", "ocr", "hello", f"other-{run}")  # another model's feedback
    big = feedback(f"big-{run}", "ocr", "b" * 1_000_000, f"big-{run}")
    # a1 and b1 are labeled before the correction arrives: feedback waiting together for its
    # prediction yields only the latest label (documented), and the two Kafka sources are
    # read independently, so sending everything at once would make a1's label a race.
    bus.publish(p, topics.FEEDBACK, [a1, b1, a1])
    first = {(a1.source, a1.id), (b1.source, b1.id)}
    wait_for(lambda: (lambda r: r if first <= set(r) else None)(
        labeled_by_feedback(flink_app, run)), timeout_s=120, what="the first labels")
    bus.publish(p, topics.FEEDBACK, [corr, stale, other])
    bus.publish(p, topics.FEEDBACK, [big])

    want = {(a1.source, a1.id), (b1.source, b1.id), (corr.source, corr.id)}
    labeled = wait_for(lambda: (lambda r: r if want <= set(r) else None)(
        labeled_by_feedback(flink_app, run)), timeout_s=120, what="labeled records")
    # A correction after the window closed still applies (the labeled prediction is kept).
    time.sleep(JOIN_WINDOW_S + 3)
    late = feedback(f"P1-{run}", "digits", "3", "fb-3", source=f"app-a-{run}", second=9)
    bus.publish(p, topics.FEEDBACK, [late])
    p.close()
    want.add((late.source, late.id))
    labeled = wait_for(lambda: (lambda r: r if want <= set(r) else None)(
        labeled_by_feedback(flink_app, run)), timeout_s=90, what="the late correction")
    assert set(labeled) == want  # the stale one, the repeat and the mismatch are not labels
    assert len({e.id for e in labeled.values()}) == len(want)
    assert labeled[(b1.source, b1.id)].data["prediction_id"] == f"P2-{run}"
    assert labeled[(late.source, late.id)].data["correction"] is True
    assert labeled[(a1.source, a1.id)].data["correction"] is False

    ids = {f"sentinel-{run}", f"nan-{run}", f"junk-{run}", f"other-{run}", f"big-{run}"}
    def dead_letters() -> dict[str, tuple[bytes, dict]] | None:
        # Raw records: a dead letter keeps what could not be parsed (or only its head).
        got = {}
        for r in read_committed(s.kafka_bootstrap, topics.DEADLETTER):
            h = dict(r.headers)
            if h.get("ce_id", b"").decode(errors="replace") in ids:
                got[h["ce_id"].decode()] = (r.value, h)
        return got if len(got) == len(ids) else None

    dead = wait_for(dead_letters, timeout_s=JOIN_WINDOW_S * 3 + 60, what="dead letters")
    reasons = {i: h["dl_reason"].decode() for i, (_, h) in dead.items()}
    assert reasons[f"sentinel-{run}"].startswith("invalid_feedback:"), reasons
    assert reasons[f"nan-{run}"].startswith("invalid_prediction: finite"), reasons
    assert reasons[f"junk-{run}"].startswith("invalid_prediction:"), reasons
    assert reasons[f"other-{run}"].startswith("model_mismatch:"), reasons
    assert reasons[f"big-{run}"].startswith("too_large:"), reasons
    for i, (_, h) in dead.items():
        assert int(h["dl_source_offset"]) >= 0 and int(h["dl_source_partition"]) >= 0, i
        assert h["dl_source_topic"] in (topics.FEEDBACK.encode(), topics.PREDICTIONS.encode())
    big_value, big_h = dead[f"big-{run}"]
    assert len(big_value) <= s.dead_letter_max_value_bytes < int(big_h["dl_value_bytes"])

    # The stream went on without a single restart, and status sees a healthy job.
    job = flink_app.rest(f"/jobs/{flink_app.job['job_id']}")
    assert job["state"] == "RUNNING"
    assert flink_app.restarts() == 0
    assert job_health(job, s.flink_restart_grace_s)[0]
    *cluster, spec = flink_components(s)  # what `driftloop status` asks
    assert spec.health() and all(c.health() for c in cluster)
    # status shows the job's state and its last checkpoint, from the JobManager.
    assert spec.details is not None
    [shown] = spec.details()["jobs"]  # type: ignore[misc]
    assert (shown["id"], shown["state"]) == (flink_app.job["job_id"], "RUNNING")
    assert shown["last_checkpoint"]["id"] >= 1 and shown["last_checkpoint"]["age_s"] < 60

    # Quality and training see one label per prediction: P1's latest correction.
    from driftloop.monitoring.quality import aggregate

    [acc] = [q for q in aggregate([e.data for e in labeled.values()], model="digits")
             if q.metric == "accuracy"]
    assert (acc.count, acc.mean) == (2, 1.0)  # P1 (corrected back to 3) and P2, once each

    # The Flink archive keeps both reused-id feedback events and all labels, once each.
    def archived_mine() -> set | None:
        got = {(x["data"]["feedback_source"], x["data"]["feedback_id"])
               for x in archived_lines(flink_app, "labeled")
               if str(x["data"].get("prediction_id", "")).endswith(run)}
        return got if got >= want else None

    wait_for(archived_mine, timeout_s=60, what="labeled archive")
    lab_lines = [x for x in archived_lines(flink_app, "labeled")
                 if str(x["data"].get("prediction_id", "")).endswith(run)]
    assert len(lab_lines) == len(want)
    fb_lines = [(x["source"], x["id"]) for x in archived_lines(flink_app, "feedback")
                if x["source"].endswith(run)]
    assert sorted(fb_lines) == sorted({(e.source, e.id) for e in (a1, b1, corr, stale, late)})


def test_batch_over_blob_prefix_equals_stream(flink_app: FlinkApp, tmp_path) -> None:
    run = uuid.uuid4().hex[:8]
    objects = {
        "model=speech/a/clip1.wav": wav(22050, 1.0),
        "model=speech/a/clip2.wav": wav(48000, 0.7, channels=2, dtype="float32"),
        "model=ocr/scan.png": image(120, 80, "PNG", noise=True),
        "model=ocr/photo.jpg": image(64, 64, "JPEG"),
        "model=speech/broken.wav": b"RIFF-not-really",
    }
    settings = flink_app.settings.model_copy(update={
        "state_dir": tmp_path, "blob_url": (tmp_path / "blobs").as_uri()})
    store = open_store(settings.resolved_blob_url, settings)
    for rel, data in objects.items():
        store.put(f"raw/{run}/{rel}", data)
    env = {**settings_env(settings), "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.run(
        [str(settings.flink_venv / "bin" / "python"), "-m", "flink.jobs.batch",
         "--input", f"raw/{run}/", "--output", f"pre/{run}/"],
        env={**os.environ, **env}, cwd=PROJECT_ROOT, capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary | {"seconds": 0} == {"objects": 5, "ok": 4, "rejected": 1, "seconds": 0}

    # The same objects through the stream job, with the same ids and models.
    p = bus.make_producer(flink_app.settings)
    for rel, data in objects.items():
        modality, ct = ("audio", "audio/wav") if rel.endswith(".wav") else (
            "image", "image/png" if rel.endswith(".png") else "image/jpeg")
        model = rel.split("/")[0].removeprefix("model=")
        bus.publish(p, topics.raw(modality), [raw(data, ct, model, rel)])
    p.close()
    ids = set(objects)
    streamed: dict = {}
    for modality in ("audio", "image"):
        streamed |= wait_for(lambda m=modality: (lambda r: r if len(r) == 2 else None)(
            by_id(flink_app, topics.preprocessed(m), ids)), timeout_s=90,
            what=f"streamed {modality}")
    for rel in ids - {"model=speech/broken.wav"}:
        batch = json.loads(store.get(f"pre/{run}/{rel}.json"))
        stream_ev = streamed[rel][0]
        assert batch["id"] == stream_ev.id and batch["type"] == stream_ev.type
        # Same record; only where a big payload was put differs: the store (file:// vs
        # s3://) and the key, which derives from the input's (source, id) and the batch
        # names its inputs under a source of its own.
        b_pay, s_pay = batch["data"].pop("payload"), dict(stream_ev.data)
        s_pay = s_pay.pop("payload")
        assert batch["data"] == {k: v for k, v in stream_ev.data.items() if k != "payload"}
        where = {"blob_url", "blob_key"}
        assert {k: v for k, v in b_pay.items() if k not in where} == {
            k: v for k, v in s_pay.items() if k not in where}, rel
        if b_pay["encoding"] == "blob":
            assert b_pay["blob_key"] != s_pay["blob_key"], rel
        b_bytes = (base64.b64decode(b_pay["data"]) if b_pay["encoding"] == "base64"
                   else store.get(b_pay["blob_key"]))
        assert b_bytes == decode_payload(flink_app, s_pay), rel
    rejected = json.loads(store.get(f"pre/{run}/_rejected/model=speech/broken.wav.json"))
    assert rejected["reason"] == "undecodable"
    dead = wait_for(lambda: by_id(flink_app, topics.DEADLETTER, {"model=speech/broken.wav"}),
                    timeout_s=60, what="stream dead letter")
    assert dead["model=speech/broken.wav"][1]["dl_reason"].startswith(b"undecodable:")


def archived_lines(app: FlinkApp, kind: str) -> list[dict]:
    store = open_store(app.settings.resolved_blob_url, app.settings)
    lines: list[dict] = []
    for key in store.list(f"{kind}/"):
        if key.rsplit("/", 1)[-1].startswith((".", "_")):
            continue  # in-progress files of the running job, not yet committed
        lines += [json.loads(x) for x in store.get(key).decode().splitlines() if x]
    return lines


def test_prometheus_scrapes_the_session_cluster(flink_app: FlinkApp, tmp_path) -> None:
    """The stack's scrape config (one job per cluster process) reads real Flink metrics from
    the JobManager and the TaskManager, and every Flink panel of the dashboard has its series."""
    from driftloop.monitoring import config
    from driftloop.monitoring.promql import metric_names

    s = flink_app.settings.model_copy(update={
        "prometheus_port": free_port(), "pushgateway_port": free_port(),
        "alertmanager_port": free_port(), "scrape_interval_s": 1.0})
    jobs = [config.ScrapeJob(c.name, (c.metrics,)) for c in flink_app.cluster.specs]
    assert [j.name for j in jobs] == ["flink-jobmanager", "flink-taskmanager-1"]
    files = config.write_configs(s, tmp_path / "monitoring", jobs)
    log = tmp_path / "prometheus.log"
    proc = spawn(config.prometheus_argv(files, s.prometheus_port), log_path=log)
    prom = f"http://127.0.0.1:{s.prometheus_port}"

    def query(q: str) -> list[dict]:
        with urllib.request.urlopen(f"{prom}/api/v1/query?{urlencode({'query': q})}",
                                    timeout=10) as r:
            return json.loads(r.read())["data"]["result"]

    try:
        wait_until(lambda: http_ok(f"{prom}/-/ready"), timeout_s=60, what="prometheus",
                   alive=lambda: proc.poll() is None, log_path=log)
        # The reporter escapes label values: "driftloop-preprocess-join-archive" reads
        name = "driftloop_preprocess_join_archive"
        up = wait_for(lambda: {r["metric"]["job"] for r in query("up == 1")} >= {
            "flink-jobmanager", "flink-taskmanager-1"} or None, timeout_s=60, what="targets up")
        assert up
        restarts = wait_for(lambda: query(f'flink_jobmanager_job_numRestarts{{job_name="{name}"}}'),
                            timeout_s=60, what="the JobManager's job restart count")
        assert restarts[0]["metric"]["job"] == "flink-jobmanager"
        records = wait_for(lambda: query(
            f'sum by (job) (flink_taskmanager_job_task_operator_numRecordsIn{{job_name="{name}"}})'
            " > 0"), timeout_s=60, what="records counted by the TaskManager's operators")
        assert records[0]["metric"]["job"] == "flink-taskmanager-1"
        dash = json.loads((PROJECT_ROOT / "infra" / "grafana"
                           / "driftloop-overview.json").read_text())
        wanted = {n for p in dash["panels"] for t in p.get("targets", [])
                  for n in metric_names(t["expr"]) if n.startswith("flink_")}
        assert wanted
        # ... and every Flink series an alert reads (an alert on a name Flink does not
        # expose would never fire).
        rules = yaml.safe_load((PROJECT_ROOT / "infra" / "prometheus" / "rules"
                                / "driftloop-alerts.yml").read_text())
        alerted = {n for g in rules["groups"] for r in g["rules"]
                   for n in metric_names(r["expr"]) if n.startswith("flink_")}
        assert "flink_jobmanager_job_uptime" in alerted
        wanted |= alerted

        deadline = time.monotonic() + 60
        while True:
            with urllib.request.urlopen(f"{prom}/api/v1/label/__name__/values",
                                        timeout=10) as r:
                exposed = {n for n in json.loads(r.read())["data"] if n.startswith("flink_")}
            if wanted <= exposed or time.monotonic() > deadline:
                break
            time.sleep(2)
        (tmp_path / "flink-metric-names.txt").write_text("\n".join(sorted(exposed)))
        assert wanted <= exposed, sorted(wanted - exposed)
    finally:
        stop_pid(proc.pid)


def test_archive_exactly_once_across_kill_and_restart(flink_app: FlinkApp) -> None:
    run = uuid.uuid4().hex[:8]
    model = f"m{run}"
    preds = [prediction(f"kp{i}-{run}", "ocr", {"text": "abc"}) for i in range(300)]
    preds = [events.Event(id=e.id, source=e.source, type=e.type, time=e.time,
                          datacontenttype=e.datacontenttype, extensions={"model": model},
                          data={**e.data, "model": "ocr"}) for e in preds]
    fbs = [feedback(f"kp{i}-{run}", "ocr", "abd", id_=f"kf{i}-{run}") for i in range(300)]
    p = bus.make_producer(flink_app.settings)
    bus.publish(p, topics.PREDICTIONS, preds[:150])
    bus.publish(p, topics.FEEDBACK, fbs[:150])
    wait_for(lambda: len([x for x in archived_lines(flink_app, "feedback")
                          if x["id"].endswith(run)]) > 0,
             timeout_s=90, what="first archive files")
    flink_app.kill()  # mid-stream: some records archived, others in flight or in progress
    bus.publish(p, topics.PREDICTIONS, preds[150:])
    bus.publish(p, topics.FEEDBACK, fbs[150:])
    bus.publish(p, topics.FEEDBACK, fbs[:10])  # an app retry: the same events again
    p.close()
    flink_app.start()
    # It restored from its newest checkpoint on the S3 server.
    restored = flink_app.job["restored_from"]
    assert restored and restored.startswith(
        flink_path(flink_app.settings.flink_checkpoint_dir) + "/"), restored

    def ident(x: dict) -> str:  # invalid lines (poison kept by the archive) have neither
        if x.get("type") == events.LABELED:
            return str(x["data"]["feedback_id"])
        return str(x.get("id", ""))

    def complete(kind: str, n: int) -> list[str] | None:
        ids = [ident(x) for x in archived_lines(flink_app, kind) if ident(x).endswith(run)]
        return ids if len(ids) >= n else None

    pred_ids = wait_for(lambda: complete("predictions", 300), timeout_s=150,
                        what="all predictions archived")
    fb_ids = wait_for(lambda: complete("feedback", 300), timeout_s=60,
                      what="all feedback archived")
    labeled_ids = wait_for(lambda: complete("labeled", 300), timeout_s=60,
                           what="all labeled archived")
    time.sleep(3)  # a few more checkpoints: anything doubled would show up now
    pred_ids = complete("predictions", 0) or []
    fb_ids = complete("feedback", 0) or []
    labeled_ids = complete("labeled", 0) or []
    assert sorted(pred_ids) == sorted(e.id for e in preds)
    assert sorted(fb_ids) == sorted(e.id for e in fbs)
    assert sorted(labeled_ids) == sorted(e.id for e in fbs)
    store = open_store(flink_app.settings.resolved_blob_url, flink_app.settings)
    # The partition is the data's model (ocr), not the extension's: one rule everywhere.
    assert not list(store.list(f"predictions/model={model}/"))
    keys = list(store.list("predictions/model=ocr/"))
    assert keys and all(k.split("/")[2].startswith("date=") for k in keys)
    labeled = [e for e, _ in read_events(flink_app.settings.kafka_bootstrap, topics.LABELED)
               if e.data["feedback_id"].endswith(run)]
    assert len(labeled) == 300 and len({e.id for e in labeled}) == 300
    assert all(e.data["quality"] == pytest.approx(1 / 3) for e in labeled)
