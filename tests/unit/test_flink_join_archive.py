"""The join state machine and the archive line builder, without Flink."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from driftloop import events, topics
from driftloop.errors import ValidationFailed
from driftloop.labeled import labeled_id
from driftloop.settings import Settings
from flink.jobs import join as join_job
from flink.jobs.app import app_name, parse_pipelines
from flink.jobs.common import kafka_sink_ddl, kafka_source_ddl, latest_checkpoint
from flink.transforms import join
from flink.transforms.archive import archive_line

WINDOW = 1000
CFG = join.JoinConfig(window_ms=WINDOW, keep_ms=10 * WINDOW)


def pred(pid: str, model: str = "ocr", output: dict | None = None) -> dict:
    ev = events.new_event(events.PREDICTION, "srv", {"model": model, "version": "v1",
                                                     "output": output or {"text": "abc"}},
                          id=pid)
    return join.parse_side(join.PREDICTION, ev)[1]


def fb(pid: str, fid: str, truth: object = "abd", model: str = "ocr", source: str = "app",
       time: str | None = None, version: str | None = None) -> dict:
    data = {"prediction_id": pid, "model": model, "truth": truth}
    if version is not None:
        data["version"] = version
    ev = events.new_event(events.FEEDBACK, source, data, id=fid,
                          time=datetime.fromisoformat(time) if time else None)
    key, record = join.parse_side(join.FEEDBACK, ev)
    assert key == pid
    return record


def feed(state, side, record, now=0, cfg=CFG):
    return join.on_record(state, side, record, now, cfg)


def test_prediction_then_feedback_labels_with_quality():
    s, out, timer = feed(join.empty_state(), join.PREDICTION, pred("p1"))
    assert out == [] and timer == WINDOW
    s, out, timer = feed(s, join.FEEDBACK, fb("p1", "f1"), now=10)
    assert timer is None
    [lab] = out
    assert lab.kind == "labeled" and lab.event.id == labeled_id("app", "f1")
    assert lab.event.data["feedback_id"] == "f1" and not lab.event.data["correction"]
    assert lab.event.data["metric"] == "cer"
    assert lab.event.data["quality"] == pytest.approx(1 / 3)
    assert lab.event.extensions["model"] == "ocr"


def test_feedback_first_then_prediction():
    s, out, _ = feed(join.empty_state(), join.FEEDBACK, fb("p1", "f1"))
    assert out == []
    s, out, _ = feed(s, join.PREDICTION, pred("p1"))
    assert [o.event.data["feedback_id"] for o in out] == ["f1"]
    s, out, timer = join.on_timer(s, WINDOW, CFG)
    assert out == [] and s["phase"] == "corrections" and timer == WINDOW + CFG.keep_ms


def test_duplicates_are_dropped_and_counted():
    s, _, _ = feed(join.empty_state(), join.PREDICTION, pred("p1"))
    s, out, _ = feed(s, join.PREDICTION, pred("p1"))
    assert [o.counter for o in out] == ["duplicate_predictions"]
    s, out, _ = feed(s, join.FEEDBACK, fb("p1", "f1"))
    assert len(out) == 1
    s, out, _ = feed(s, join.FEEDBACK, fb("p1", "f1"))
    assert [o.counter for o in out] == ["duplicate_feedback"]
    s, out, _ = feed(s, join.FEEDBACK, fb("p1", "f2", truth="abc"))
    assert out[0].event.data["quality"] == 0.0 and out[0].event.data["correction"]


def test_window_close_dead_letters_waiting_feedback_and_counts_lonely_predictions():
    s, _, _ = feed(join.empty_state(), join.FEEDBACK, fb("px", "f9"),
                   cfg=join.JoinConfig(WINDOW))
    s, [dl], _ = join.on_timer(s, WINDOW, CFG)
    assert s is None
    assert dl.kind == "deadletter" and dl.reason.startswith("unmatched_feedback:")
    assert json.loads(dl.raw)["id"] == "f9"
    s, _, _ = feed(join.empty_state(), join.PREDICTION, pred("p2"))
    s, out, timer = join.on_timer(s, WINDOW, CFG)
    assert [o.counter for o in out] == ["unmatched_predictions"]
    assert s is None and timer is None  # unlabeled predictions are not kept


def test_invalid_inputs_raise():
    bad = events.new_event(events.FEEDBACK, "app", {"model": "ocr", "truth": 1})
    with pytest.raises(ValidationFailed):
        join.parse_side(join.FEEDBACK, bad)
    with pytest.raises(Exception, match="is not"):
        join.parse_side(join.PREDICTION, bad)


def test_unknown_model_labels_without_quality():
    s, _, _ = feed(join.empty_state(), join.PREDICTION, pred("p1", model="mystery"))
    _, out, _ = feed(s, join.FEEDBACK, fb("p1", "f1", model="mystery"))
    assert out[0].event.data["quality"] is None and out[0].event.data["metric"] is None


def test_archive_line_partition_and_dedup_key():
    t = datetime(2026, 3, 4, 23, 59, tzinfo=UTC)
    ev = events.new_event(events.FEEDBACK, "app", {"prediction_id": "p", "model": "ocr",
                                                   "truth": "x"}, id="f1", time=t)
    rec = events.to_kafka(ev)
    a = archive_line(rec.value, rec.headers, kafka_time_ms=0)
    assert (a.model, a.date, a.dedup_key) == ("ocr", "2026-03-04", '["app", "f1"]')
    assert json.loads(a.line)["data"]["truth"] == "x"
    bad = archive_line(b"garbage", [], kafka_time_ms=86_400_000)
    assert (bad.model, bad.date) == ("invalid", "1970-01-02")
    unsafe = events.to_kafka(events.new_event(events.FEEDBACK, "a", {"model": "../x"}))
    assert archive_line(unsafe.value, unsafe.headers, 0).model == "unknown"


def test_ddl_and_app_helpers(tmp_path):
    s = Settings(kafka_bootstrap="127.0.0.1:1", state_dir=tmp_path)
    src = kafka_source_ddl("t", "driftloop.feedback", s, "archive")
    assert "'properties.isolation.level'='read_committed'" in src
    assert "headers MAP<STRING, BYTES> METADATA" in src
    sink = kafka_sink_ddl("o", ["a", "b"], s, "x")
    assert "'topic'='a;b'" in sink and "'sink.delivery-guarantee'='exactly-once'" in sink
    assert app_name(["archive", "preprocess"]) == "preprocess-archive"
    with pytest.raises(SystemExit):
        parse_pipelines("preprocess,nope")
    root = tmp_path / "ck"
    assert latest_checkpoint(root.as_uri()) is None
    for job, n in (("j1", 3), ("j2", 7)):
        (root / job / f"chk-{n}").mkdir(parents=True)
        (root / job / f"chk-{n}" / "_metadata").write_bytes(b"x")
    assert latest_checkpoint(root.as_uri()).endswith("j2/chk-7")


def test_feedback_ids_reused_across_sources_give_distinct_labeled_records():
    s1, _, _ = feed(join.empty_state(), join.PREDICTION, pred("P1"))
    s2, _, _ = feed(join.empty_state(), join.PREDICTION, pred("P2"))
    _, [a], _ = feed(s1, join.FEEDBACK, fb("P1", "fb-1", source="app-a"))
    _, [b], _ = feed(s2, join.FEEDBACK, fb("P2", "fb-1", source="app-b"))
    assert a.event.id != b.event.id
    assert (a.event.data["feedback_source"], b.event.data["feedback_source"]) == (
        "app-a", "app-b")
    # Within one prediction, the same id from two sources is two feedback events.
    s, _, _ = feed(join.empty_state(), join.PREDICTION, pred("P3"))
    s, out1, _ = feed(s, join.FEEDBACK, fb("P3", "fb-1", source="app-a",
                                           time="2026-01-01T00:00:00+00:00"))
    s, out2, _ = feed(s, join.FEEDBACK, fb("P3", "fb-1", source="app-b",
                                           time="2026-01-01T00:00:01+00:00"))
    s, out3, _ = feed(s, join.FEEDBACK, fb("P3", "fb-1", source="app-b",
                                           time="2026-01-01T00:00:01+00:00"))
    assert [o.kind for o in out1 + out2] == ["labeled", "labeled"]
    assert [o.counter for o in out3] == ["duplicate_feedback"]


def test_corrections_latest_event_time_wins_even_after_the_window():
    t = "2026-01-01T00:00:0{}+00:00"
    s, _, _ = feed(join.empty_state(), join.PREDICTION, pred("p1", model="digits",
                                                            output={"label": "3"}))
    s, [first], _ = feed(s, join.FEEDBACK, fb("p1", "f1", truth="3", model="digits",
                                               time=t.format(1)))
    assert first.event.data["quality"] == 1.0
    # An older feedback arriving later is superseded: never a second label.
    s, out, _ = feed(s, join.FEEDBACK, fb("p1", "f0", truth="9", model="digits",
                                          time=t.format(0)))
    assert [o.counter for o in out] == ["superseded_feedback"]
    # The window closes; the labeled prediction is kept for corrections.
    s, out, timer = join.on_timer(s, WINDOW, CFG)
    assert out == [] and s is not None and timer == WINDOW + CFG.keep_ms
    s, [corr], _ = feed(s, join.FEEDBACK, fb("p1", "f2", truth="5", model="digits",
                                              time=t.format(2)), now=5 * WINDOW)
    assert corr.kind == "labeled" and corr.event.data["correction"]
    assert corr.event.data["truth"] == "5" and corr.event.data["quality"] == 0.0
    # After the corrections period the key is gone.
    s, out, timer = join.on_timer(s, timer, CFG)
    assert (s, out, timer) == (None, [], None)


def test_feedback_first_only_the_latest_is_labeled():
    s, _, _ = feed(join.empty_state(), join.FEEDBACK,
                   fb("p1", "f-new", truth="x", time="2026-01-01T00:00:05+00:00"))
    s, _, _ = feed(s, join.FEEDBACK, fb("p1", "f-old", truth="y",
                                        time="2026-01-01T00:00:01+00:00"))
    s, out, _ = feed(s, join.PREDICTION, pred("p1"))
    assert [o.kind for o in out] == ["count", "labeled"] or [o.kind for o in out] == [
        "labeled", "count"]
    [lab] = [o for o in out if o.kind == "labeled"]
    assert lab.event.data["feedback_id"] == "f-new"


def test_feedback_for_another_model_or_version_is_dead_lettered():
    s, _, _ = feed(join.empty_state(), join.PREDICTION, pred("p1", model="digits",
                                                            output={"label": "7"}))
    s, [dl], _ = feed(s, join.FEEDBACK, fb("p1", "f1", truth="hello", model="ocr"),
                      )
    assert dl.kind == "deadletter" and dl.reason.startswith("model_mismatch:")
    assert "'ocr'" in dl.reason and "'digits'" in dl.reason
    s, [dl2], _ = feed(s, join.FEEDBACK, fb("p1", "f2", truth="7", model="digits",
                                            version="v9"))
    assert dl2.reason.startswith("model_mismatch:") and "'v9'" in dl2.reason
    s, [ok], _ = feed(s, join.FEEDBACK, fb("p1", "f3", truth="7", model="digits",
                                           version="v1"))
    assert ok.kind == "labeled" and ok.event.extensions["model"] == "digits"
    rec = join.encode(dl, CFG)
    h = dict(rec.headers)
    assert rec.topic == topics.DEADLETTER and h["dl_reason"].startswith(b"model_mismatch:")
    assert h["dl_source_topic"] == topics.FEEDBACK.encode()


def test_nan_output_and_oversized_labeled_records_are_dead_lettered_not_raised():
    bad = events.new_event(events.PREDICTION, "srv", {"model": "ocr", "version": "v1",
                                                      "output": {"score": float("nan")}}, id="p")
    with pytest.raises(Exception, match="finite"):
        join.parse_side(join.PREDICTION, bad)
    # A labeled record that slipped through with NaN becomes a dead letter of its feedback.
    prediction = json.loads(json.dumps(pred("p9")))
    prediction["data"]["output"] = {"text": "abc", "score": float("nan")}
    origin = {"topic": topics.FEEDBACK, "partition": 2, "offset": 41}
    s, _, _ = feed(join.empty_state(), join.PREDICTION, prediction)
    _, [lab], _ = join.on_record(s, join.FEEDBACK, fb("p9", "f9"), 0, CFG, origin)
    rec = join.encode(lab, CFG)
    h = dict(rec.headers)
    assert rec.topic == topics.DEADLETTER and h["dl_reason"].startswith(b"unencodable:")
    assert (h["dl_source_partition"], h["dl_source_offset"]) == (b"2", b"41")
    # 600 KB output + 600 KB truth over a 1 MiB limit: too_large, feedback parked.
    small = join.JoinConfig(window_ms=WINDOW, max_record_bytes=1024 * 1024)
    s, _, _ = feed(join.empty_state(), join.PREDICTION,
                   pred("p8", output={"text": "a" * 600_000}), cfg=small)
    _, [lab], _ = join.on_record(s, join.FEEDBACK, fb("p8", "f8", truth="b" * 600_000), 0,
                                 small, origin)
    rec = join.encode(lab, small)
    h = dict(rec.headers)
    assert rec.topic == topics.DEADLETTER and h["dl_reason"].startswith(b"too_large:")
    assert len(rec.value) <= small.max_dead_letter_value_bytes
    assert int(h["dl_value_bytes"]) > 600_000 and h["dl_source_offset"] == b"41"
    ok = join.encode(lab, join.JoinConfig(window_ms=WINDOW, max_record_bytes=2 * 1024 * 1024))
    assert ok.topic == topics.LABELED


def test_job_keys_cannot_collide_with_the_invalid_bucket():
    for pid in ("\x00invalid", "x", "", "k"):
        ev = events.new_event(events.FEEDBACK, "app", {"prediction_id": pid or "p",
                                                       "model": "ocr", "truth": 1}, id="f")
        rec = events.to_kafka(ev)
        key, side, payload = join_job.parse("f", rec.value, dict(rec.headers), 1, 7)
        # Valid ids are keyed k<id>; ids intake's pattern refuses are parked as invalid.
        assert key in ("k" + (pid or "p"), join_job.INVALID_KEY), key
        assert (key == join_job.INVALID_KEY) == side.startswith("invalid_feedback:")
        assert json.loads(payload)["origin"] == {"topic": topics.FEEDBACK, "partition": 1,
                                                 "offset": 7}
    key, reason, payload = join_job.parse("p", b"junk", {}, 0, 3)
    assert key == join_job.INVALID_KEY and reason.startswith("invalid_prediction:")
    rec = join_job.invalid_record(reason, payload, 1024)
    h = dict(rec.headers)
    assert rec.value == b"junk" and h["dl_source_topic"] == topics.PREDICTIONS.encode()
    assert h["dl_source_offset"] == b"3"


def test_old_checkpoint_state_is_restored():
    old = {"prediction": pred("p1"), "pending": {}, "matched": ["app\x00f1"], "deadline": 5}
    s = join.restore_state(old)
    _, out, _ = feed(s, join.FEEDBACK, fb("p1", "f1"))
    assert [o.counter for o in out] == ["duplicate_feedback"]
    _, out, _ = feed(s, join.FEEDBACK, fb("p1", "f2"))
    assert out[0].event.data["correction"]
