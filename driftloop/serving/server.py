"""Running MLServer for driftloop: its settings file, environment and process.

Used by the local stack, the test session and the benchmark, so all three start the
server the same way: ``python -m seldon.runtimes.server start <dir>`` (``mlserver start``
with driftloop's request guard: body size and model names checked before MLServer
parses anything) in ``.venv-serving``, with the registry-backed model repository, the
repository root on ``PYTHONPATH`` (for ``seldon.runtimes``) and driftloop's settings
passed as ``DRIFTLOOP_*`` variables.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from driftloop.errors import StackError
from driftloop.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-serving"
REPOSITORY = "seldon.runtimes.repository.RegistryRepository"


def mlserver_bin() -> Path:
    return VENV / "bin" / "mlserver"


def installed() -> bool:
    """True when ``make setup`` created the serving environment."""
    return mlserver_bin().exists()


def mlserver_settings(settings: Settings) -> dict[str, object]:
    """MLServer's ``settings.json``: ports on loopback, models from the registry."""
    return {
        "debug": False,
        "host": "127.0.0.1",
        "http_port": settings.serving_http_port,
        "grpc_port": settings.serving_grpc_port,
        "metrics_port": settings.serving_metrics_port,
        "metrics_endpoint": "/metrics",
        # Inference runs in the server process (off the event loop, in threads): one copy
        # of each model in memory and one Prometheus registry for driftloop's metrics.
        "parallel_workers": 0,
        "load_models_at_startup": True,
        "model_repository_implementation": REPOSITORY,
        "model_repository_implementation_args": {"models": settings.serving_model_list},
        "gzip_enabled": False,
        # gRPC refuses larger messages itself (REST has the request guard).
        "grpc_max_message_length": settings.serving_max_request_bytes,
    }


def settings_env(settings: Settings) -> dict[str, str]:
    """``settings`` as ``DRIFTLOOP_*`` variables for a child process."""
    env: dict[str, str] = {}
    for name, value in settings.reveal().items():
        if value is not None:
            env[f"DRIFTLOOP_{name.upper()}"] = str(value)
    env["DRIFTLOOP_BLOB_URL"] = settings.resolved_blob_url
    return env


def write_config(settings: Settings, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps(mlserver_settings(settings), indent=1))
    return folder


def server_env(settings: Settings) -> dict[str, str]:
    """Environment of the MLServer process (only what it needs, plus driftloop's settings)."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TESSDATA_PREFIX")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(settings_env(settings))
    env.update({"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
                "MLSERVER_METRICS_DIR": str(settings.state_dir / "serving" / "metrics")})
    return env


def argv(folder: Path) -> list[str]:
    return [str(VENV / "bin" / "python"), "-m", "seldon.runtimes.server", "start", str(folder)]


def ready(base_url: str, models: list[str], timeout_s: float = 2.0) -> bool:
    """True when the server answers and every model is ready."""
    try:
        with httpx.Client(base_url=base_url, timeout=timeout_s) as c:
            if c.get("/v2/health/ready").status_code != 200:
                return False
            return all(c.get(f"/v2/models/{m}/ready").status_code == 200 for m in models)
    except httpx.HTTPError:
        return False


@dataclass
class MLServerProcess:
    """One MLServer started from ``settings`` (tests and benchmarks; the stack has its own)."""

    settings: Settings
    folder: Path
    log_path: Path
    _proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.serving_http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.serving_metrics_port}/metrics"

    def start(self, timeout_s: float = 120.0) -> MLServerProcess:
        if not installed():
            raise StackError(f"{mlserver_bin()} is missing: run `make setup`")
        write_config(self.settings, self.folder)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(argv(self.folder), cwd=self.folder,
                                      env=server_env(self.settings), stdout=self._log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                raise StackError(f"MLServer exited with {code}; see {self.log_path}")
            if ready(self.url, self.settings.serving_model_list):
                return self
            time.sleep(0.5)
        self.stop()
        raise StackError(f"MLServer not ready after {timeout_s:.0f} s; see {self.log_path}")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stop(self, timeout_s: float = 15.0) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None
