"""``driftloop up`` with only the monitoring components: started, listed by status, stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from driftloop.cli import app
from driftloop.local.process import free_port, pid_alive

pytestmark = pytest.mark.integration


def test_up_status_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "DRIFTLOOP_STATE_DIR": str(tmp_path),
        "DRIFTLOOP_COMPONENTS": "prometheus,pushgateway,alertmanager",
        "DRIFTLOOP_PROMETHEUS_PORT": str(free_port()),
        "DRIFTLOOP_PUSHGATEWAY_PORT": str(free_port()),
        "DRIFTLOOP_ALERTMANAGER_PORT": str(free_port()),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    runner = CliRunner()
    r = runner.invoke(app, ["up"])
    try:
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, ["status", "--json"])
        assert r.exit_code == 0, r.output
        comps = {c["name"]: c for c in json.loads(r.stdout)["components"]}
        assert set(comps) == {"prometheus", "pushgateway", "alertmanager"}
        assert all(c["healthy"] for c in comps.values()), comps
        port = env["DRIFTLOOP_PROMETHEUS_PORT"]
        assert comps["prometheus"]["endpoint"] == f"http://127.0.0.1:{port}"
        assert (tmp_path / "monitoring" / "prometheus.yml").is_file()
        pids = [c["pid"] for c in comps.values()]
    finally:
        r = runner.invoke(app, ["down"])
    assert r.exit_code == 0, r.output
    assert not any(pid_alive(p) for p in pids)
