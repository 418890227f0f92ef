"""``driftloop up | status | down`` as a person runs them: the real CLI, real processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from driftloop.local.process import free_port, pid_alive

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "driftloop")


def run_cli(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def stack_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLOOP_")}
    env.update({
        "DRIFTLOOP_STATE_DIR": str(tmp_path / "state"),
        "DRIFTLOOP_KAFKA_PORT": str(free_port()),
        "DRIFTLOOP_KAFKA_CONTROLLER_PORT": str(free_port()),
        "DRIFTLOOP_KAFKA_METRICS_PORT": str(free_port()),
        "DRIFTLOOP_INTAKE_PORT": str(free_port()),
        "DRIFTLOOP_COMPONENTS": "kafka,feedback-intake,archive",
        "DRIFTLOOP_ARCHIVE_ENGINE": "consumer",
        "DRIFTLOOP_KAFKA_HEAP": "384m",
    })
    yield env
    run_cli("down", env=env)


def test_up_status_second_up_down(stack_env):
    up = run_cli("up", env=stack_env)
    assert up.returncode == 0, up.stderr
    status = run_cli("status", "--json", env=stack_env)
    assert status.returncode == 0, status.stderr
    comps = json.loads(status.stdout)["components"]
    assert [c["name"] for c in comps] == ["kafka", "feedback-intake", "archive"]
    assert all(c["healthy"] and pid_alive(c["pid"]) for c in comps)
    assert all({"name", "pid", "endpoint", "healthy"} <= set(c) for c in comps)
    intake = next(c for c in comps if c["name"] == "feedback-intake")
    assert httpx.get(f"{intake['endpoint']}/healthz").status_code == 200
    assert comps[0]["endpoint"] == f"127.0.0.1:{stack_env['DRIFTLOOP_KAFKA_PORT']}"

    again = run_cli("up", env=stack_env)
    assert again.returncode == 0
    assert "already up" in again.stdout + again.stderr

    down = run_cli("down", env=stack_env)
    assert down.returncode == 0, down.stderr
    assert not any(pid_alive(c["pid"]) for c in comps)
    assert json.loads(run_cli("status", "--json", env=stack_env).stdout) == {"components": []}


def test_busy_port_is_one_clear_line(stack_env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        stack_env["DRIFTLOOP_INTAKE_PORT"] = str(s.getsockname()[1])
        r = run_cli("up", env=stack_env)
    assert r.returncode != 0
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert "port busy" in r.stderr and "feedback-intake" in r.stderr
    assert len(" ".join(lines)) < 300 and "Traceback" not in r.stderr
    assert json.loads(run_cli("status", "--json", env=stack_env).stdout) == {"components": []}


def test_missing_java_is_one_clear_line(stack_env, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stack_env["PATH"] = str(bin_dir)  # nothing there: no java
    r = run_cli("up", env=stack_env)
    assert r.returncode != 0
    assert "Java not found" in r.stderr and "Traceback" not in r.stderr
