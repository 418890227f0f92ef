"""With Kafka unreachable, inferences still answer, and their prediction events wait in the
server's spool: a SIGKILL of the server loses none, the next start sends them."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from driftloop import topics
from driftloop.blob import open_store
from driftloop.local.process import free_port
from driftloop.registry import Registry
from driftloop.serving.bootstrap import ensure_models
from driftloop.serving.client import V2Client
from driftloop.serving.models import digits
from driftloop.serving.server import MLServerProcess
from driftloop.settings import Settings
from tests.fixtures.flink import wait_for

pytestmark = pytest.mark.integration


def _server(settings: Settings, folder: Path, name: str) -> MLServerProcess:
    return MLServerProcess(settings, folder / name, folder / f"{name}.log")


def _settings(state: Path, **kw: Any) -> Settings:
    """A digits-only server whose Kafka is a closed port, on free ports."""
    s = Settings(state_dir=state, kafka_bootstrap=f"127.0.0.1:{free_port()}",
                 serving_models="digits", serving_http_port=free_port(),
                 serving_grpc_port=free_port(), serving_metrics_port=free_port(), **kw)
    ensure_models(Registry(open_store(s.resolved_blob_url, s)), ["digits"])
    return s


def _sample(text: str, name: str, labels: str = "") -> float | None:
    m = re.search(rf"^{name}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else None


def test_inference_never_fails_because_of_kafka(tmp_path):
    settings = _settings(tmp_path, serving_event_queue=3)
    server = _server(settings, tmp_path, "server").start(timeout_s=120)
    try:
        x = digits.load_dataset().X[:1].tolist()
        with V2Client(server.url, timeout_s=30) as c:
            preds = [c.infer_tensor("digits", x) for _ in range(25)]
        assert all(p.output["label"] == 0 for p in preds)
        text = httpx.get(server.metrics_url, timeout=10).text
        # The queue holds 3; the rest wait on disk, none is dropped.
        assert _sample(text, "driftloop_prediction_spool_records") == 25
        assert "driftloop_prediction_events_dropped_total{" not in text
        assert 'driftloop_model_requests_total{model="digits",outcome="ok",version="1"} 25.0' \
            in text
    finally:
        server.stop()


def test_answered_predictions_reach_kafka_after_the_server_is_killed(kafka, tmp_path):
    """Answered while Kafka is unreachable, the server SIGKILLed, started again with the
    broker: every answered prediction's event arrives (by (source, id))."""
    down = _settings(tmp_path)
    server = _server(down, tmp_path, "first").start(timeout_s=180)
    x = digits.load_dataset().X[:1].tolist()
    try:
        with V2Client(server.url, timeout_s=30) as c:
            answered = {c.infer_tensor("digits", x).id for _ in range(20)}
    finally:
        assert server.pid is not None
        os.killpg(server.pid, signal.SIGKILL)
        server.stop()
    assert len(answered) == 20
    up = down.model_copy(update={"kafka_bootstrap": kafka.bootstrap})
    again = _server(up, tmp_path, "second").start(timeout_s=180)
    try:
        def arrived() -> set[str]:
            got = {(e.source, e.id) for e in kafka.read_events(topics.PREDICTIONS)
                   if e.id in answered}
            return got if {i for _, i in got} == answered else set()

        got = wait_for(arrived, timeout_s=120, interval_s=2.0,
                       what="a prediction event per answered request")
        assert {s for s, _ in got} == {"driftloop/serving/digits"}

        def drained() -> bool:
            text = httpx.get(again.metrics_url, timeout=10).text
            return _sample(text, "driftloop_prediction_spool_records") == 0

        wait_for(drained, timeout_s=60, what="the spool emptied by Kafka's acknowledgements")
    finally:
        again.stop()
    assert list((tmp_path / "serving" / "prediction-spool").glob("*.seg")) == []
