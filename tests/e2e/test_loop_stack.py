"""The loop through the local stack itself: the dispatcher carries drift.detected from
``driftloop.events`` to the retrain-trigger function and model.trained to the promote
function (both under functions-framework); MLServer serves; Prometheus scrapes it."""

from __future__ import annotations

import pytest

from driftloop.blob import open_store
from driftloop.demo.loop import run_loop
from driftloop.registry import Registry
from driftloop.retrain.stackrun import loop_stack
from driftloop.retrain.state import RunStore


@pytest.mark.timeout(400)
def test_loop_on_the_local_stack(tmp_path):
    with loop_stack(tmp_path / "state", DRIFTLOOP_PROMOTE_BAKE_S="8") as (settings, endpoints):
        assert {"retrain-trigger", "promote", "dispatcher", "mlserver"} <= set(endpoints)
        report = run_loop(settings, via="stack", trigger_url=endpoints["retrain-trigger"])
        store = open_store(settings.resolved_blob_url, settings)
        registry = Registry(store)
        runs = RunStore(store).runs("digits")

    assert report.phase == "promoted", report.reason
    assert report.quality["before"] > 0.9 and report.quality["drifted"] < 0.4
    assert report.quality["after"] > 0.85
    assert report.decision.startswith("drift:"), report.decision  # delivered by the dispatcher
    assert len(runs) == 1 and runs[0].trigger == "drift" and runs[0].status == "succeeded"
    assert registry.alias("digits", "champion") == report.new_version == "2"
    assert set(report.canary_split) == {"1", "2"}
    # Prometheus scraped MLServer: the challenger's requests were counted for the guard.
    assert "error_rate: challenger 0.000%" in report.reason, report.reason
    assert report.timings["trigger_to_serving_s"] < 60
