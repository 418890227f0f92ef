"""A real ``driftloop up``: Prometheus scrapes every started component that serves metrics, each
target is up, and every dashboard panel reads metrics the running stack exposes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from driftloop import events as ev
from driftloop.local.process import free_port
from driftloop.monitoring import metrics as drift_metrics
from driftloop.monitoring.promql import metric_names
from driftloop.serving import v2
from driftloop.settings import PROJECT_ROOT

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "driftloop")
DASHBOARD = PROJECT_ROOT / "infra" / "grafana" / "driftloop-overview.json"
COMPONENTS = ("kafka,kafka-lag,node-exporter,prometheus,pushgateway,alertmanager,mlserver,"
              "serving-stream,feedback-intake,drift-check,retrain-trigger,promote,dispatcher")
PORTS = ("KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "KAFKA_METRICS_PORT", "KAFKA_LAG_PORT",
         "NODE_EXPORTER_PORT", "INTAKE_PORT", "DRIFT_CHECK_PORT", "RETRAIN_PORT", "PROMOTE_PORT",
         "PROMETHEUS_PORT", "PUSHGATEWAY_PORT", "ALERTMANAGER_PORT", "DISPATCHER_METRICS_PORT",
         "SERVING_HTTP_PORT", "SERVING_GRPC_PORT", "SERVING_METRICS_PORT",
         "SERVING_STREAM_METRICS_PORT")
TOKEN = "monitoring-targets-token"
PROMETHEUS_OWN = {"ALERTS", "ALERTS_FOR_STATE", "up", "scrape_duration_seconds",
                  "scrape_samples_scraped", "scrape_series_added"}
"""Series Prometheus makes itself (ALERTS only while an alert is pending or firing)."""
PUSHED_BY_CHECKS = {v for k, v in vars(drift_metrics).items()
                    if k.isupper() and isinstance(v, str) and v.startswith("driftloop_")}
"""Pushed by drift-check once it has judged a window (a model, its profile, enough records)."""


def run_cli(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    ports = {name: free_port() for name in PORTS}
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLOOP_")}
    env.update({f"DRIFTLOOP_{k}": str(v) for k, v in ports.items()})
    env.update({
        "DRIFTLOOP_STATE_DIR": str(tmp_path_factory.mktemp("monitoring-targets") / "state"),
        "DRIFTLOOP_COMPONENTS": COMPONENTS,
        "DRIFTLOOP_KAFKA_HEAP": "384m",
        "DRIFTLOOP_SERVING_MODELS": "digits",
        "DRIFTLOOP_SCRAPE_INTERVAL_S": "1",
        "DRIFTLOOP_FUNCTION_TOKENS": TOKEN,
        "DRIFTLOOP_ALERT_WEBHOOK_URL": f"http://127.0.0.1:{ports['RETRAIN_PORT']}/",
    })
    up = run_cli("up", env=env)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        status = run_cli("status", "--json", env=env)
        assert status.returncode == 0, status.stderr
        yield env, ports, json.loads(status.stdout)["components"]
    finally:
        run_cli("down", env=env)


def _prom(ports: dict[str, int], path: str, **params: str) -> Any:
    r = httpx.get(f"http://127.0.0.1:{ports['PROMETHEUS_PORT']}{path}", params=params, timeout=10)
    r.raise_for_status()
    return r.json()["data"]


def test_every_started_component_serving_metrics_is_a_target_and_up(stack: Any) -> None:
    _env, ports, comps = stack
    assert {c["name"] for c in comps} == set(COMPONENTS.split(","))
    scrape = {c["name"]: c["scrape"] for c in comps if c.get("scrape")}
    assert set(scrape) == set(COMPONENTS.split(","))  # every part of this stack serves metrics

    deadline = time.monotonic() + 180
    while True:
        active = _prom(ports, "/api/v1/targets")["activeTargets"]
        got = {t["labels"]["job"]: t for t in active}
        if (set(got) == set(scrape) and all(t["health"] == "up" for t in active)) \
                or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert {j: t["labels"]["instance"] for j, t in got.items()} == scrape
    assert len(active) == len(scrape)
    assert {j: t["health"] for j, t in got.items()} == dict.fromkeys(scrape, "up"), \
        {j: t.get("lastError") for j, t in got.items()}
    result = _prom(ports, "/api/v1/query", query="up")["result"]
    up = {r["metric"]["job"]: r["value"][1] for r in result}
    assert up == dict.fromkeys(scrape, "1")
    durations = {j: round(t["lastScrapeDuration"], 4) for j, t in sorted(got.items())}
    print(f"\n{len(active)} targets up; last scrape durations (s): {durations}")


def _drive(ports: dict[str, int]) -> None:
    """Traffic every part answers: feedback, inferences (one refused), a call to each
    control-plane function (one refused for its missing token)."""
    fb = ev.new_event(ev.FEEDBACK, "monitoring-targets", {"prediction_id": "p-1",
                      "model": "digits", "truth": 3}, datacontenttype=ev.JSON)
    headers, body = ev.to_http_binary(fb)
    r = httpx.post(f"http://127.0.0.1:{ports['INTAKE_PORT']}/", headers=headers, content=body)
    assert r.status_code == 202, r.text
    infer = f"http://127.0.0.1:{ports['SERVING_HTTP_PORT']}/v2/models/digits/infer"
    assert httpx.post(infer, json=v2.tensor_request([[0.0] * 64]), timeout=60).status_code == 200
    assert httpx.post(infer, json=v2.tensor_request([[1.0]]), timeout=60).status_code == 400
    for port in ("DRIFT_CHECK_PORT", "RETRAIN_PORT", "PROMOTE_PORT"):
        base = f"http://127.0.0.1:{ports[port]}/"
        assert httpx.post(base, json={}).status_code == 401
        httpx.post(base, json={}, headers={"authorization": f"Bearer {TOKEN}"}, timeout=60)


SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                   "summary": ("", "_sum", "_count")}


def _exposed(ports: dict[str, int]) -> set[str]:
    """Names with samples, and the sample names of every family a target declares (a
    counter nothing has counted yet is declared on /metrics, with no sample)."""
    names = set(_prom(ports, "/api/v1/label/__name__/values"))
    for family, meta in _prom(ports, "/api/v1/metadata").items():
        for m in meta:
            # The family is named with or without _total (text format vs OpenMetrics).
            names.update(family + s for s in ("", *SAMPLE_SUFFIXES.get(m["type"], ())))
    return names


def test_every_dashboard_panel_reads_metrics_the_stack_exposes(stack: Any) -> None:
    _env, ports, _comps = stack
    _drive(ports)
    dash = json.loads(DASHBOARD.read_text())
    wanted = {name: p["title"] for p in dash["panels"] for t in p.get("targets", [])
              for name in metric_names(t["expr"])}
    assert wanted
    deadline = time.monotonic() + 120
    while True:
        # Flink's panels are held to a running session cluster in test_flink_pipelines
        # (this stack leaves Flink out: it would double the test's memory).
        missing = {n: title for n, title in wanted.items()
                   if n not in _exposed(ports) and n not in PROMETHEUS_OWN | PUSHED_BY_CHECKS
                   and not n.startswith("flink_")}
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert missing == {}, f"panels read metrics nothing in the stack exposes: {missing}"
    # Names pushed by drift-check are held to drift-check's own declarations instead.
    assert {n for n in wanted if n.startswith("driftloop_drift_") or n.startswith(
        "driftloop_quality")} <= PUSHED_BY_CHECKS


def test_functions_count_requests_errors_and_events(stack: Any) -> None:
    _env, ports, _comps = stack
    base = f"http://127.0.0.1:{ports['RETRAIN_PORT']}"
    before = httpx.get(f"{base}/metrics").text
    event = ev.new_event("driftloop.test.ping", "monitoring-targets", {"x": 1},
                         datacontenttype=ev.JSON)
    headers, body = ev.to_http_binary(event)
    assert httpx.post(f"{base}/", headers=headers, content=body).status_code == 401
    page = httpx.get(f"{base}/metrics").text
    assert 'driftloop_function_errors_total{reason="unauthorized"}' in page
    # Not a type driftloop declares: counted under "other", one more than before.
    assert _sample(page, 'driftloop_function_events_total{type="other"}') == _sample(
        before, 'driftloop_function_events_total{type="other"}') + 1
    assert page != before


def _sample(page: str, series: str) -> float:
    """The value of one series in an exposition page (0 when absent)."""
    for line in page.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0
