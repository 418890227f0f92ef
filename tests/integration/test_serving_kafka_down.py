"""With Kafka unreachable, inferences still answer; dropped prediction events are counted."""

from __future__ import annotations

import re

import httpx
import pytest

from driftloop.blob import open_store
from driftloop.local.process import free_port
from driftloop.registry import Registry
from driftloop.serving.bootstrap import ensure_models
from driftloop.serving.client import V2Client
from driftloop.serving.models import digits
from driftloop.serving.server import MLServerProcess
from driftloop.settings import Settings

pytestmark = pytest.mark.integration


def test_inference_never_fails_because_of_kafka(tmp_path):
    settings = Settings(state_dir=tmp_path, kafka_bootstrap=f"127.0.0.1:{free_port()}",
                        serving_models="digits", serving_event_queue=3,
                        serving_http_port=free_port(), serving_grpc_port=free_port(),
                        serving_metrics_port=free_port())
    ensure_models(Registry(open_store(settings.resolved_blob_url, settings)), ["digits"])
    server = MLServerProcess(settings, tmp_path / "server", tmp_path / "mlserver.log")
    server.start(timeout_s=120)
    try:
        x = digits.load_dataset().X[:1].tolist()
        with V2Client(server.url, timeout_s=30) as c:
            preds = [c.infer_tensor("digits", x) for _ in range(25)]
        assert all(p.output["label"] == 0 for p in preds)
        text = httpx.get(server.metrics_url, timeout=10).text
        m = re.search(r'driftloop_prediction_events_dropped_total\{reason="queue_full"\} (\S+)',
                      text)
        assert m and float(m.group(1)) >= 20
        assert 'driftloop_model_requests_total{model="digits",outcome="ok",version="1"} 25.0' \
            in text
    finally:
        server.stop()
