"""A deployed function finds its policies: the retrain-trigger wheelhouse installed into a
fresh venv outside the checkout, the function folder served from a temporary directory by
functions-framework, no DRIFTLOOP_POLICY_DIR set; a drift event is decided by the shipped
digits policy and its training run (in that venv) succeeds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from driftloop import events as ev
from driftloop.blob import open_store
from driftloop.local.process import free_port, http_ok, spawn, stop_pid, wait_until
from driftloop.retrain.state import RunStore
from driftloop.settings import PROJECT_ROOT, Settings
from tests.fixtures.loop import drift_event, wait_run

pytestmark = pytest.mark.integration
FUNCTION = PROJECT_ROOT / "functions" / "retrain-trigger"


@pytest.fixture(scope="session")
def function_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``driftloop package-function retrain-trigger`` → a fresh venv from its wheelhouse
    (no index), once per session. The venv has no pip of its own: this interpreter's pip
    installs into it (``--python``; only pip itself comes from here, the venv sees nothing
    else of this environment), and without compiling bytecode (Python compiles on import):
    bootstrapping pip into the venv and compiling every installed module took most of the
    setup."""
    base = tmp_path_factory.mktemp("packaged")
    wheels = base / "wheels"
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=300)
    subprocess.run([str(Path(sys.executable).parent / "driftloop"), "package-function",
                    "retrain-trigger", "--out", str(wheels)], check=True, cwd=base,
                   timeout=1200)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                    "install", "--quiet", "--no-compile", "--no-index",
                    "--find-links", str(wheels), "driftloop", "-r",
                    str(FUNCTION / "requirements.txt")], check=True, timeout=1200,
                   env={k: v for k, v in os.environ.items() if not k.startswith("PIP_")})
    return venv


def test_an_installed_function_decides_with_the_shipped_policy(function_venv, kafka,
                                                               tmp_path) -> None:
    served = tmp_path / "fn"
    shutil.copytree(FUNCTION, served, ignore=shutil.ignore_patterns("wheels", "__pycache__"))
    state = tmp_path / "state"
    settings = Settings(state_dir=state, kafka_bootstrap=kafka.bootstrap)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DRIFTLOOP_", "PYTHON", "VIRTUAL_ENV"))}
    env.update({"DRIFTLOOP_STATE_DIR": str(state), "DRIFTLOOP_KAFKA_BOOTSTRAP": kafka.bootstrap,
                "DRIFTLOOP_PROMETHEUS_URL": "http://127.0.0.1:9", "PYTHONUNBUFFERED": "1"})
    port = free_port()
    log = tmp_path / "function.log"
    proc = spawn([str(function_venv / "bin" / "functions-framework"), "--target",
                  "retrain_trigger", "--source", str(served / "main.py"), "--host",
                  "127.0.0.1", "--port", str(port)], log_path=log, env=env, cwd=served)
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), timeout_s=60,
                   what="packaged retrain-trigger", alive=lambda: proc.poll() is None,
                   log_path=log)
        headers, body = ev.to_http_binary(drift_event())
        r = httpx.post(f"http://127.0.0.1:{port}/", headers=headers, content=body, timeout=60)
        assert r.status_code == 202, r.text
        decision = r.json()["decision"]
        fired = [x["rule"] for x in decision["rules"] if x["fired"]]
        assert fired == ["drift"] and decision["explain"].startswith("retrain digits: drift")
        # The shipped policy's other rules were evaluated too (it is the real file).
        assert {x["rule"] for x in decision["rules"]} >= {"feedback_volume", "quality",
                                                           "drift", "latency", "schedule"}
        runs = RunStore(open_store(settings.resolved_blob_url, settings))
        run = wait_run(runs, "digits", r.json()["run_id"], timeout_s=300)
        # The job ran in the packaged environment and, with no feedback archived yet,
        # says so instead of training the base data again.
        assert run.status == "skipped", run.error
        assert "feedback" in (run.skip_reason or ""), run.skip_reason
    finally:
        stop_pid(proc.pid)
