"""MLServer's own floor: a model that does nothing, served by a plain MLServer.

``bench/serving.py`` sends it the same V2 JSON request body as the digits JSON path,
interleaved with the other sides, so the overhead figures can be read against what MLServer
costs by itself on this machine in the same run (HTTP, request parsing, the response): the
part of the serving overhead driftloop's runtimes add is what lies above it.

The server runs from ``.venv-serving`` with this repository on ``PYTHONPATH`` (for
``bench.serving_floor_model.Floor``); no driftloop code is in its request path.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

MODEL = "floor"
IMPLEMENTATION = "bench.serving_floor_model.Floor"
"""Imported by the server only: MLServer's protos clash with the gRPC client's in one
process."""

def write_config(folder: Path, http_port: int, grpc_port: int, metrics_port: int) -> Path:
    """MLServer's ``settings.json`` and the floor model's ``model-settings.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {
        "debug": False,
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "parallel_workers": 0,
        "gzip_enabled": False,
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    model = folder / MODEL
    model.mkdir(exist_ok=True)
    (model / "model-settings.json").write_text(
        json.dumps({"name": MODEL, "implementation": IMPLEMENTATION})
    )
    return folder


def argv(venv: Path, folder: Path) -> list[str]:
    return [str(venv / "bin" / "mlserver"), "start", str(folder)]


def start(
    venv: Path, root: Path, folder: Path, log_path: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start the floor server (the caller waits for it to be ready and stops it)."""
    log = log_path.open("ab")
    return subprocess.Popen(
        argv(venv, folder),
        cwd=folder,
        env={**env, "PYTHONPATH": str(root), "PYTHONUNBUFFERED": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
