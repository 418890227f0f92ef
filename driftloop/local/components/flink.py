"""Flink in the local stack: a standalone session cluster and the application submitted to it.

Components ``flink-jobmanager`` and ``flink-taskmanager-<n>`` are the cluster (see
``driftloop.local.flink_cluster``), each scraped by Prometheus; ``flink`` submits the
preprocess, join and archive pipelines to it as one job (remote execution through the
JobManager's REST API) and stays attached to it. PyFlink runs in ``.venv-flink`` (its
dependencies conflict with the library's); everything is left out when that environment or
the connector jars are missing.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from driftloop.local import flink_cluster
from driftloop.local.components import ComponentSpec
from driftloop.settings import PROJECT_ROOT, Settings

ORDER = 30


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
    cmd = [
        str(python(settings)),
        "-m",
        "flink.jobs.app",
        "--pipelines",
        ",".join(pipelines(settings)),
    ]
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


def _registered(rest: str, tm_id: str) -> Callable[[], bool]:
    """Healthy once the TaskManager registered with the JobManager."""
    return lambda: tm_id in flink_cluster.taskmanager_ids(rest)


def _jobmanager(
    name: str,
    argv: list[str],
    rest: str,
    env: dict[str, str],
    cwd: Path,
    *,
    ports: tuple[int, ...],
    metrics_port: int,
    prepare: Callable[[], None] | None = None,
    extra: dict[str, object] | None = None,
    order: int = ORDER - 2,
) -> ComponentSpec:
    """A JobManager process (the leader, or the 'ha' topology's standby): healthy once its
    REST API answers ``/overview``."""
    return ComponentSpec(
        name=name,
        argv=argv,
        order=order,
        endpoint=rest,
        health=lambda: isinstance(flink_cluster.rest_get(rest, "/overview"), dict),
        env=env,
        cwd=cwd,
        ports=ports,
        start_timeout_s=120,
        prepare=prepare,
        extra=extra or {},
        metrics=f"127.0.0.1:{metrics_port}",
    )


def cluster_components(settings: Settings) -> list[ComponentSpec]:
    """The JobManager and ``flink_taskmanagers`` TaskManagers of the session cluster; in the
    'ha' topology also the ZooKeeper server of JobManager high availability (first) and a
    standby JobManager that takes over the running job when the leader dies."""
    layout = flink_cluster.ClusterLayout(settings)
    rest = flink_cluster.rest_url(settings)
    env = {**layout.env(), "PATH": f"{settings.flink_venv / 'bin'}:{os.environ.get('PATH', '')}"}
    specs = []
    if settings.topology == "ha":
        specs.append(ComponentSpec(
            name="flink-zookeeper",
            argv=layout.zookeeper_argv(),
            order=ORDER - 3,
            endpoint=flink_cluster.zookeeper_address(settings),
            health=lambda: flink_cluster.zookeeper_ok(settings),
            env={**env, "ZK_HEAP": "128"},  # MB, read by bin/zookeeper.sh
            cwd=layout.root,
            ports=(settings.flink_zookeeper_port,),
            start_timeout_s=60,
            prepare=layout.prepare,
            extra={"ha_storage": flink_cluster.ha_storage_dir(settings)},
        ))
    specs.append(_jobmanager(
        "flink-jobmanager", layout.jobmanager_argv(), rest, env, layout.root,
        ports=(settings.flink_rest_port, settings.flink_jobmanager_rpc_port,
               settings.flink_metrics_port),
        metrics_port=settings.flink_metrics_port,
        prepare=layout.prepare,
        extra={
            "rpc": f"127.0.0.1:{settings.flink_jobmanager_rpc_port}",
            "slots": settings.flink_taskmanager_slots * settings.flink_taskmanagers,
        },
    ))
    if settings.topology == "ha":
        # The standby's REST API answers (through the leader) once it joined the election.
        metrics = flink_cluster.standby_metrics_port(settings)
        specs.append(_jobmanager(
            "flink-jobmanager-standby", layout.standby_jobmanager_argv(),
            f"http://127.0.0.1:{settings.flink_standby_rest_port}", env, layout.root,
            ports=(settings.flink_standby_rest_port, metrics), metrics_port=metrics,
            # After the first JobManager is up (it leads), with the TaskManagers: started
            # together, either could win the first election.
            order=ORDER - 1,
        ))
    for n in range(1, settings.flink_taskmanagers + 1):
        tm_id = flink_cluster.taskmanager_id(n)
        specs.append(
            ComponentSpec(
                name=f"flink-{tm_id}",
                argv=layout.taskmanager_argv(n),
                order=ORDER - 1,
                endpoint=f"{rest}/taskmanagers/{tm_id}",
                health=_registered(rest, tm_id),
                env=env,
                cwd=layout.root,
                ports=(settings.flink_metrics_port + n,),
                start_timeout_s=120,
                extra={"slots": settings.flink_taskmanager_slots},
                metrics=f"127.0.0.1:{settings.flink_metrics_port + n}",
            )
        )
    return specs


def ha_update(settings: Settings) -> dict[str, object]:
    """What the 'ha' topology changes: two TaskManagers at least (one may fail while the
    job restarts on the other), and every broker to bootstrap from. (JobManager high
    availability, ZooKeeper included, follows from ``topology`` itself.)"""
    if settings.topology != "ha":
        return {}
    from driftloop.local.components.kafka import bootstrap_for

    return {"flink_taskmanagers": max(2, settings.flink_taskmanagers),
            "kafka_bootstrap": bootstrap_for(settings)}


def components(settings: Settings) -> list[ComponentSpec]:
    if not installed(settings):
        return []
    session = settings.model_copy(update={"flink_target": "session", **ha_update(settings)})
    ready = ready_file(settings)
    rest = flink_cluster.rest_url(session)
    rests = flink_cluster.rest_urls(session)

    def prepare() -> None:
        ready.unlink(missing_ok=True)

    def health() -> bool:
        info = _read_ready(ready)
        if info is None:
            return False
        if not info.get("rest_url"):
            return True  # no REST API configured: submitted is all that is known
        first = str(info["rest_url"])
        for url in (first, *(u for u in rests if u != first)):
            job = fetch_job(url, str(info.get("job_id")))
            if job is not None:
                return job_health(job, settings.flink_restart_grace_s)[0]
        return False

    def details() -> dict[str, object]:
        """Each job's state and last checkpoint, from the REST API of the first JobManager
        that answers (in 'ha' the standby's while the first is down)."""
        return {"jobs": flink_cluster.first_job_summaries(rests)}

    env = {
        **settings_env(session),
        "PYTHONPATH": str(PROJECT_ROOT),
        "PATH": os.environ.get("PATH", os.defpath),
    }
    return [
        *cluster_components(session),
        ComponentSpec(
            name="flink",
            argv=argv(session, ready),
            order=ORDER,
            endpoint=f"{rest} (session cluster): {','.join(pipelines(settings))}",
            health=health,
            env=env,
            cwd=PROJECT_ROOT,
            start_timeout_s=240,
            prepare=prepare,
            details=details,
            extra={
                "pipelines": pipelines(settings),
                "checkpoints": str(
                    settings.flink_checkpoint_dir or settings.state_dir / "flink" / "checkpoints"
                ),
            },
        ),
    ]
