"""The Flink application of the local stack: preprocess, join and archive in one mini-cluster.

It runs in ``.venv-flink`` (PyFlink's dependencies conflict with the library's); the
component is left out when that environment or the connector jars are missing.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
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
    chosen: list[str] = list(settings.flink_pipelines)
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
        ready: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return ready


def job_health(job: dict[str, Any], grace_s: float) -> tuple[bool, str]:
    """Healthy only while the job runs and has not restarted within ``grace_s``: a job stuck
    in a restart loop (a record it cannot get past) never is. ``job`` is Flink's REST
    ``/jobs/<id>`` answer."""
    state = str(job.get("state"))
    if state != "RUNNING":
        return False, f"job {state}"
    now = int(job.get("now") or time.time() * 1000)
    restarted = int((job.get("timestamps") or {}).get("RESTARTING") or 0)
    if restarted > 0 and now - restarted < grace_s * 1000:
        return False, f"job restarted {(now - restarted) / 1000:.0f} s ago"
    return True, "running"


def fetch_job(rest_url: str, job_id: str, timeout_s: float = 3.0) -> dict[str, Any] | None:
    """The job's REST details, or None when the mini-cluster does not answer."""
    try:
        with urllib.request.urlopen(f"{rest_url}/jobs/{job_id}", timeout=timeout_s) as r:
            body = json.loads(r.read())
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def components(settings: Settings) -> list[ComponentSpec]:
    if not installed(settings):
        return []
    ready = ready_file(settings)

    def prepare() -> None:
        ready.unlink(missing_ok=True)

    def health() -> bool:
        info = _read_ready(ready)
        if info is None:
            return False
        if not info.get("rest_url"):
            return True  # no REST API configured: submitted is all that is known
        job = fetch_job(str(info["rest_url"]), str(info.get("job_id")))
        return job is not None and job_health(job, settings.flink_restart_grace_s)[0]

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
            ports=(settings.flink_rest_port,) if settings.flink_rest_port else (),
            prepare=prepare,
            extra={"pipelines": pipelines(settings),
                   "checkpoints": str(settings.flink_checkpoint_dir
                                      or settings.state_dir / "flink" / "checkpoints")},
        )
    ]
