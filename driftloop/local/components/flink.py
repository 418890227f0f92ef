"""The Flink application of the local stack: preprocess, join and archive in one mini-cluster.

It runs in ``.venv-flink`` (PyFlink's dependencies conflict with the library's); the
component is left out when that environment or the connector jars are missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from driftloop.local.components import ComponentSpec
from driftloop.settings import PROJECT_ROOT, Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """``DRIFTLOOP_*`` variables that rebuild ``settings`` in a child process."""
    env: dict[str, str] = {}
    for name, value in settings.reveal(mode="json").items():
        if value is None:
            continue
        env[f"DRIFTLOOP_{name.upper()}"] = (
            json.dumps(value) if isinstance(value, dict | list) else str(value)
        )
    return env


def python(settings: Settings) -> Path:
    return settings.flink_venv / "bin" / "python"


def lib_dir(settings: Settings) -> Path:
    return settings.flink_lib_dir or settings.cache_dir / "flink" / "lib"


def ready_file(settings: Settings) -> Path:
    return settings.state_dir / "flink" / "ready.json"


def pipelines(settings: Settings) -> list[str]:
    """The configured pipelines, without archive when the archive v0 consumer has the job."""
    chosen = [p.strip() for p in settings.flink_pipelines.split(",") if p.strip()]
    if settings.archive_engine == "consumer":
        chosen = [p for p in chosen if p != "archive"]
    return chosen


def argv(settings: Settings, ready: Path | None = None) -> list[str]:
    cmd = [str(python(settings)), "-m", "flink.jobs.app", "--pipelines",
           ",".join(pipelines(settings))]
    if ready is not None:
        cmd += ["--ready-file", str(ready)]
    return cmd


def installed(settings: Settings) -> bool:
    return python(settings).exists() and any(lib_dir(settings).glob("*.jar"))


def _read_ready(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def components(settings: Settings) -> list[ComponentSpec]:
    if not installed(settings):
        return []
    ready = ready_file(settings)

    def prepare() -> None:
        ready.unlink(missing_ok=True)

    def health() -> bool:
        return _read_ready(ready) is not None

    env = {**settings_env(settings), "PYTHONPATH": str(PROJECT_ROOT),
           "PATH": os.environ.get("PATH", os.defpath)}
    return [
        ComponentSpec(
            name="flink",
            argv=argv(settings, ready),
            order=30,
            endpoint=f"local mini-cluster: {','.join(pipelines(settings))}",
            health=health,
            env=env,
            cwd=PROJECT_ROOT,
            start_timeout_s=240,
            prepare=prepare,
            extra={"pipelines": pipelines(settings),
                   "checkpoints": str(settings.flink_checkpoint_dir
                                      or settings.state_dir / "flink" / "checkpoints")},
        )
    ]
