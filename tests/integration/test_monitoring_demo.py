"""The demo's drift step on the session's real Kafka, Pushgateway, Prometheus and Alertmanager."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from driftloop.blob import open_store
from driftloop.demo.context import DemoContext
from driftloop.demo.drift import step_drift
from driftloop.registry import Registry
from driftloop.settings import Settings

pytestmark = pytest.mark.integration


def test_demo_step_shows_drift_alert_and_report(
    kafka: Any, monitoring: Any, tmp_path: Path
) -> None:
    settings = Settings(
        state_dir=tmp_path,
        blob_url=(tmp_path / "blobs").as_uri(),
        prometheus_port=monitoring.settings.prometheus_port,
        pushgateway_port=monitoring.settings.pushgateway_port,
        alertmanager_port=monitoring.settings.alertmanager_port,
    )
    model = "demo-digits"
    Registry(open_store(settings.resolved_blob_url, settings)).register(model, {"m": b"w"})
    ctx = DemoContext(settings, Console(record=True, width=120), {"kafka": kafka.bootstrap})
    step_drift(ctx, n=200, model=model)
    summary = ctx.summary["drift"]
    assert summary["share_before"] < 0.5 <= summary["share_after"]
    assert summary["event"]["type"] == "io.driftloop.drift.detected.v1"
    assert summary["alert"] == "firing"
    assert Path(summary["report"]).is_file()
    assert "DriftloopDriftDetected: firing" in ctx.console.export_text()
