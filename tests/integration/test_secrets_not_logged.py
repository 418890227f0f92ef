"""The local stack started with known secret values (function and intake tokens, the Kafka
password, the S3 secret key of the real S3 server it uses): the control plane wants a
token, the dispatcher and Alertmanager send one, and no secret appears in any log file,
in ``status --json`` or on any ``/metrics``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from driftloop import events as ev
from driftloop import topics
from driftloop.bus import make_producer, publish
from driftloop.local.eventing.endpoints import heartbeat_path
from driftloop.local.process import free_port
from driftloop.settings import Settings

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "driftloop")
COMPONENTS = ("kafka,feedback-intake,archive,drift-check,retrain-trigger,promote,dispatcher,"
              "pushgateway,alertmanager,prometheus")


def run_cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def wait_for(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise TimeoutError(f"{what}: still {last!r} after {timeout_s}s")


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
def secrets() -> dict[str, str]:
    tag = uuid.uuid4().hex[:12]
    return {"fn1": f"fntok-a-{tag}", "fn2": f"fntok-b-{tag}", "intake": f"intok-{tag}",
            "kafka": f"kpw-{tag}"}


@pytest.fixture
def stack(tmp_path, s3, secrets):
    ports = {name: free_port() for name in (
        "KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "KAFKA_METRICS_PORT", "INTAKE_PORT",
        "DRIFT_CHECK_PORT", "RETRAIN_PORT", "PROMOTE_PORT", "PROMETHEUS_PORT", "PUSHGATEWAY_PORT",
        "ALERTMANAGER_PORT", "DISPATCHER_METRICS_PORT")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLOOP_")}
    env.update({f"DRIFTLOOP_{k}": str(v) for k, v in ports.items()})
    env.update({
        "DRIFTLOOP_STATE_DIR": str(tmp_path / "state"),
        "DRIFTLOOP_COMPONENTS": COMPONENTS,
        "DRIFTLOOP_ARCHIVE_ENGINE": "consumer",
        "DRIFTLOOP_KAFKA_HEAP": "384m",
        "DRIFTLOOP_ALERT_WEBHOOK_URL": f"http://127.0.0.1:{ports['RETRAIN_PORT']}/",
        "DRIFTLOOP_BLOB_URL": f"s3://{s3.new_bucket()}/driftloop",
        "DRIFTLOOP_S3_ENDPOINT_URL": s3.endpoint_url,
        "DRIFTLOOP_S3_ACCESS_KEY_ID": s3.access_key,
        "DRIFTLOOP_S3_SECRET_ACCESS_KEY": s3.secret_key,
        "DRIFTLOOP_FUNCTION_TOKENS": f"{secrets['fn1']},{secrets['fn2']}",
        "DRIFTLOOP_INTAKE_TOKENS": secrets["intake"],
        "DRIFTLOOP_KAFKA_PASSWORD": secrets["kafka"],
    })
    up = run_cli("up", env=env, timeout=600)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield env, ports, up
    finally:
        run_cli("down", env=env)


def test_secrets_stay_out_of_logs_status_and_metrics(stack, secrets, s3):
    env, ports, up = stack
    state = Path(env["DRIFTLOOP_STATE_DIR"])
    status = run_cli("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    comps = {c["name"]: c for c in json.loads(status.stdout)["components"]}
    assert set(comps) == set(COMPONENTS.split(",")), comps
    assert all(c["healthy"] for c in comps.values()), comps

    # The control plane wants a token; intake its own.
    for port in ("DRIFT_CHECK_PORT", "RETRAIN_PORT", "PROMOTE_PORT"):
        base = f"http://127.0.0.1:{ports[port]}"
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.post(f"{base}/", json={}).status_code == 401
        assert httpx.post(f"{base}/", json={},
                          headers={"authorization": f"Bearer {secrets['intake']}"}
                          ).status_code == 401
    intake = f"http://127.0.0.1:{ports['INTAKE_PORT']}/"
    fb = ev.new_event(ev.FEEDBACK, "secrets-test", {"prediction_id": "p-1", "model": "digits",
                                                    "truth": 3}, datacontenttype=ev.JSON)
    headers, body = ev.to_http_binary(fb)
    assert httpx.post(intake, headers=headers, content=body).status_code == 401
    r = httpx.post(intake, content=body,
                   headers={**headers, "authorization": f"Bearer {secrets['intake']}"})
    assert r.status_code == 202, r.text

    # The dispatcher delivers with the token: a prediction routed to drift-check is a 2xx.
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{ports['KAFKA_PORT']}")
    producer = make_producer(settings)
    try:
        publish(producer, topics.PREDICTIONS, [ev.new_event(
            ev.PREDICTION, "secrets-test", {"model": "secretprobe", "version": "1",
                                            "output": {"label": 1}},
            datacontenttype=ev.JSON, model="secretprobe")])
    finally:
        producer.close()

    def delivered() -> int:
        try:
            beat = json.loads(heartbeat_path(state).read_text())
        except (FileNotFoundError, ValueError):
            return 0
        names = {r["name"] for r in beat.get("routes", []) if r["sink"] == "drift-check"}
        routes = [r for r in beat.get("route_states", []) if r["name"] in names]
        assert not any(r["dead_lettered"] or r["errors"] for r in routes), routes
        return sum(r["delivered"] for r in routes)

    wait_for(delivered, 120, "dispatcher delivery to drift-check")

    # Alertmanager posts to retrain-trigger with the token from its credentials file.
    am = f"http://127.0.0.1:{ports['ALERTMANAGER_PORT']}"
    r = httpx.post(f"{am}/api/v2/alerts", json=[{"labels": {"alertname": "DriftloopAuthProbe",
                                                            "severity": "info"}}])
    assert r.status_code == 200, r.text

    def notified() -> float:
        text = httpx.get(f"{am}/metrics").text
        assert metric(text, "alertmanager_notifications_failed_total",
                      integration="webhook") == 0, "Alertmanager's webhook was refused"
        return metric(text, "alertmanager_notifications_total", integration="webhook")

    wait_for(notified, 120, "Alertmanager webhook notification")
    token_file = state / "monitoring" / "function-token"
    assert token_file.read_text() == secrets["fn1"]
    assert token_file.stat().st_mode & 0o077 == 0

    # No secret anywhere people and scrapers look.
    values = [*secrets.values(), s3.secret_key]
    seen: dict[str, str] = {
        "status --json": status.stdout, "up output": up.stdout + up.stderr,
        "alertmanager status": httpx.get(f"{am}/api/v2/status").text,
    }
    for name, c in comps.items():
        if c.get("log"):
            seen[f"log of {name}"] = Path(c["log"]).read_text(errors="replace")
    for path in state.rglob("*.log"):
        seen[str(path)] = path.read_text(errors="replace")
    for what, url in {
        "intake": f"{intake}metrics",
        "pushgateway": f"http://127.0.0.1:{ports['PUSHGATEWAY_PORT']}/metrics",
        "prometheus": f"http://127.0.0.1:{ports['PROMETHEUS_PORT']}/metrics",
        "alertmanager": f"{am}/metrics",
        "dispatcher": f"http://127.0.0.1:{ports['DISPATCHER_METRICS_PORT']}/metrics",
    }.items():
        r = httpx.get(url)
        assert r.status_code == 200, (what, r.status_code)
        seen[f"/metrics of {what}"] = r.text
    assert len([k for k in seen if k.startswith("log of")]) >= len(comps) - 1
    leaks = [(where, v[:8] + "…") for where, text in seen.items() for v in values if v in text]
    assert leaks == []
