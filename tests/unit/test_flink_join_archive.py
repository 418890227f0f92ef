"""The join state machine and the archive line builder, without Flink."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from driftloop import events
from driftloop.settings import Settings
from flink.jobs.app import app_name, parse_pipelines
from flink.jobs.common import kafka_sink_ddl, kafka_source_ddl, latest_checkpoint
from flink.transforms import join
from flink.transforms.archive import archive_line

WINDOW = 1000


def pred(pid: str, model: str = "ocr", output: dict | None = None) -> dict:
    ev = events.new_event(events.PREDICTION, "srv", {"model": model, "version": "v1",
                                                     "output": output or {"text": "abc"}},
                          id=pid)
    return join.parse_side(join.PREDICTION, ev)[1]


def fb(pid: str, fid: str, truth: object = "abd", model: str = "ocr") -> dict:
    ev = events.new_event(events.FEEDBACK, "app", {"prediction_id": pid, "model": model,
                                                   "truth": truth}, id=fid)
    key, record = join.parse_side(join.FEEDBACK, ev)
    assert key == pid
    return record


def feed(state, side, record, now=0):
    return join.on_record(state, side, record, now, WINDOW)


def test_prediction_then_feedback_labels_with_quality():
    s, out, timer = feed(join.empty_state(), join.PREDICTION, pred("p1"))
    assert out == [] and timer == WINDOW
    s, out, timer = feed(s, join.FEEDBACK, fb("p1", "f1"), now=10)
    assert timer is None
    [lab] = out
    assert lab.kind == "labeled" and lab.event.id == "f1"
    assert lab.event.data["metric"] == "cer"
    assert lab.event.data["quality"] == pytest.approx(1 / 3)
    assert lab.event.extensions["model"] == "ocr"


def test_feedback_first_then_prediction():
    s, out, _ = feed(join.empty_state(), join.FEEDBACK, fb("p1", "f1"))
    assert out == []
    s, out, _ = feed(s, join.PREDICTION, pred("p1"))
    assert [o.event.id for o in out] == ["f1"]
    assert join.on_timer(s, WINDOW) == []


def test_duplicates_are_dropped_and_counted():
    s, _, _ = feed(join.empty_state(), join.PREDICTION, pred("p1"))
    s, out, _ = feed(s, join.PREDICTION, pred("p1"))
    assert [o.counter for o in out] == ["duplicate_predictions"]
    s, out, _ = feed(s, join.FEEDBACK, fb("p1", "f1"))
    assert len(out) == 1
    s, out, _ = feed(s, join.FEEDBACK, fb("p1", "f1"))
    assert [o.counter for o in out] == ["duplicate_feedback"]
    s, out, _ = feed(s, join.FEEDBACK, fb("p1", "f2", truth="abc"))
    assert out[0].event.data["quality"] == 0.0


def test_window_close_dead_letters_waiting_feedback_and_counts_lonely_predictions():
    s, _, _ = feed(join.empty_state(), join.FEEDBACK, fb("px", "f9"))
    [dl] = join.on_timer(s, WINDOW)
    assert dl.kind == "deadletter" and dl.reason.startswith("unmatched_feedback:")
    assert json.loads(dl.raw)["id"] == "f9"
    s, _, _ = feed(join.empty_state(), join.PREDICTION, pred("p2"))
    assert [o.counter for o in join.on_timer(s, WINDOW)] == ["unmatched_predictions"]


def test_invalid_inputs_raise():
    bad = events.new_event(events.FEEDBACK, "app", {"model": "ocr", "truth": 1})
    with pytest.raises(events.ValidationFailed):
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
    assert (a.model, a.date, a.dedup_key) == ("ocr", "2026-03-04", "app\x00f1")
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
