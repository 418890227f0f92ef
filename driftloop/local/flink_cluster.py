"""The local Flink standalone session cluster: a JobManager and TaskManagers from PyFlink's wheel.

The apache-flink wheel in ``.venv-flink`` is a Flink distribution (``bin/``, ``lib/``,
``opt/``, ``conf/``, ``plugins/``). The stack lays out ``<state_dir>/flink/cluster`` like
the Kubernetes image (``flink/k8s/``): ``lib/`` = the wheel's jars + ``flink-python`` + the
Kafka connector, ``plugins/`` = the S3 file system + the Prometheus reporter, ``conf/`` =
the wheel's logging files + a ``config.yaml`` rendered from the settings. Each process
starts in the foreground through Flink's own scripts (they size the TaskManager's memory)
and serves Prometheus metrics on a port of its own.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from driftloop.settings import PROJECT_ROOT, Settings

__all__ = [
    "PROMETHEUS_REPORTER",
    "ClusterLayout",
    "cluster_config",
    "first_job_summaries",
    "ha_config",
    "job_summaries",
    "rest_get",
    "rest_urls",
    "taskmanager_ids",
]

PROMETHEUS_REPORTER = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
PLUGINS_FROM_WHEEL = ("metrics-prometheus",)
"""Plugins of the wheel the cluster loads (the S3 plugin comes from make setup's cache)."""


HEARTBEAT = {
    "heartbeat.interval": "1 s",
    "heartbeat.timeout": "15 s",
    "heartbeat.rpc-failure-threshold": "2",
}
"""How fast a lost process is noticed. A SIGKILLed TaskManager refuses the JobManager's
heartbeat RPCs at once: two refused in a row (one a second) fail its tasks over, instead of
Flink's 10 s interval. The timeout (Flink: 50 s) is for a process that stops answering
without its connection failing: a TaskManager waits this long for a dead JobManager before it
registers anew; 15 s stays above the stalls a loaded two-core machine shows."""

RPC = {"pekko.ask.timeout": "60 s"}
"""How long the JobManager waits for an RPC answer, a task deployment's among them (Flink:
10 s). A job restarting after a fault deploys its tasks to TaskManagers that may be busy
starting their embedded Python; on a loaded machine they took over 10 s to answer, each
timeout failed the deployment and restarted the job again (nine restarts, 151 s, in one
run of the JobManager fault). A dead TaskManager is found by its heartbeats, not this."""

ZOOKEEPER_SESSION_TIMEOUT = "5 s"
"""A killed JobManager's leadership (an ephemeral node) lasts this long in ZooKeeper: the
standby becomes leader once it expired, so it is the first part of a JobManager fault's
recovery. A live process loses its session only after this long without one ping getting
through (pings go every third of it); with ``ZOOKEEPER_TOLERATE_SUSPENDED`` a shorter stall
costs no lead."""

ZOOKEEPER_TOLERATE_SUSPENDED = "true"
"""Keep the lead (and the TaskManagers' view of the leader) while the ZooKeeper connection
is only suspended; give it up when the session is lost. Flink's default (false) revokes
leadership at a suspension, after two thirds of the session timeout without an answer:
on a loaded two-core machine a short stall would fail the running job over."""


def cluster_config(settings: Settings) -> dict[str, str]:
    """``config.yaml`` of the session cluster (flat keys); per-process keys (the metrics port,
    the TaskManager id) are passed as ``-D`` by the process's argv. The 'ha' topology adds
    JobManager high availability (``ha_config``)."""
    return {
        **HEARTBEAT,
        **RPC,
        "jobmanager.rpc.address": "127.0.0.1",
        "jobmanager.rpc.port": str(settings.flink_jobmanager_rpc_port),
        "jobmanager.bind-host": "127.0.0.1",
        "jobmanager.memory.process.size": "1024m",
        "jobmanager.execution.failover-strategy": "region",
        "taskmanager.bind-host": "127.0.0.1",
        "taskmanager.host": "127.0.0.1",
        "taskmanager.numberOfTaskSlots": str(settings.flink_taskmanager_slots),
        "taskmanager.memory.process.size": "1600m",
        "rest.address": "127.0.0.1",
        "rest.bind-address": "127.0.0.1",
        "rest.port": str(settings.flink_rest_port),
        "parallelism.default": str(settings.flink_parallelism),
        "metrics.reporter.prom.factory.class": PROMETHEUS_REPORTER,
        # Keep directory markers: S3-compatible servers backed by folders refuse to delete them.
        "s3.directory.marker.retention": "keep",
        **(ha_config(settings) if settings.topology == "ha" else {}),
    }


def ha_storage_dir(settings: Settings) -> str:
    """Where the JobManager keeps what it recovers from (job graphs, checkpoint pointers,
    the job's blobs): ``ha`` beside the applications' checkpoints, on the S3 server when
    the checkpoints are."""
    common = _jobs_common()
    return str(common.flink_path(common.checkpoint_root(settings, "ha")))


def ha_config(settings: Settings) -> dict[str, str]:
    """JobManager high availability through the stack's ZooKeeper (``flink-zookeeper``): a
    restarted JobManager takes the lead, recovers the running job (same id) from the HA
    store and restores it from its last completed checkpoint; nothing is submitted again.
    The JobManager's RPC port stays the configured one (in HA Flink reads
    ``high-availability.jobmanager.port`` instead of ``jobmanager.rpc.port``)."""
    return {
        "high-availability.type": "zookeeper",
        "high-availability.zookeeper.quorum": zookeeper_address(settings),
        "high-availability.storageDir": ha_storage_dir(settings),
        "high-availability.cluster-id": "/driftloop",
        "high-availability.jobmanager.port": str(settings.flink_jobmanager_rpc_port),
        "high-availability.zookeeper.client.session-timeout": ZOOKEEPER_SESSION_TIMEOUT,
        "high-availability.zookeeper.client.tolerate-suspended-connections":
            ZOOKEEPER_TOLERATE_SUSPENDED,
        # Not above the session timeout (Curator warns when it is).
        "high-availability.zookeeper.client.connection-timeout": ZOOKEEPER_SESSION_TIMEOUT,
    }


def zookeeper_address(settings: Settings) -> str:
    return f"127.0.0.1:{settings.flink_zookeeper_port}"


def zookeeper_config(settings: Settings, data_dir: Path) -> str:
    """``zoo.cfg`` of the single ZooKeeper server (standalone, loopback). A tick of 1 s
    lets sessions be as short as 2 s (Flink asks for ``ZOOKEEPER_SESSION_TIMEOUT``)."""
    return "".join(f"{k}={v}\n" for k, v in {
        "tickTime": "1000",
        "initLimit": "10",
        "syncLimit": "5",
        "dataDir": str(data_dir),
        "clientPort": str(settings.flink_zookeeper_port),
        "clientPortAddress": "127.0.0.1",
        "4lw.commands.whitelist": "srvr",
        "admin.enableServer": "false",
    }.items())


def zookeeper_ok(settings: Settings) -> bool:
    """The ZooKeeper server answers ``srvr`` (serving, standalone)."""
    import socket

    try:
        with socket.create_connection(("127.0.0.1", settings.flink_zookeeper_port), 2) as s:
            s.sendall(b"srvr")
            s.settimeout(2)
            got = s.recv(4096)
    except OSError:
        return False
    return b"Mode:" in got


@dataclass(frozen=True)
class ClusterLayout:
    """Where one stack's Flink distribution lives and how its processes start."""

    settings: Settings

    @property
    def wheel(self) -> Path:
        """The pyflink package folder of ``.venv-flink`` (a Flink distribution)."""
        found = sorted(self.settings.flink_venv.glob("lib/python3*/site-packages/pyflink"))
        return found[0] if found else self.settings.flink_venv / "pyflink-missing"

    @property
    def root(self) -> Path:
        return self.settings.state_dir / "flink" / "cluster"

    @property
    def lib(self) -> Path:
        return self.root / "lib"

    @property
    def plugins(self) -> Path:
        return self.root / "plugins"

    @property
    def conf(self) -> Path:
        return self.root / "conf"

    @property
    def connector_jars(self) -> list[Path]:
        lib = self.settings.flink_lib_dir or self.settings.cache_dir / "flink" / "lib"
        return sorted(lib.glob("*.jar"))

    @property
    def cache_plugins(self) -> Path:
        lib = self.settings.flink_lib_dir or self.settings.cache_dir / "flink" / "lib"
        return lib.parent / "plugins"

    def installed(self) -> bool:
        return (self.wheel / "bin" / "jobmanager.sh").exists() and bool(self.connector_jars)

    def jars(self) -> list[Path]:
        """The cluster's class path: the wheel's lib, flink-python (in the wheel's opt; the
        TaskManagers run Python functions) and the connectors."""
        return [
            *sorted((self.wheel / "lib").glob("*.jar")),
            *sorted((self.wheel / "opt").glob("flink-python-*.jar")),
            *self.connector_jars,
        ]

    def plugin_dirs(self) -> list[Path]:
        wheel = [self.wheel / "plugins" / p for p in PLUGINS_FROM_WHEEL]
        cached = sorted(p for p in self.cache_plugins.glob("*") if p.is_dir())
        return [p for p in (*wheel, *cached) if p.is_dir()]

    def prepare(self) -> None:
        """(Re)build lib/, plugins/ (symbolic links) and conf/ from the settings."""
        import yaml

        for folder, targets in ((self.lib, self.jars()), (self.plugins, self.plugin_dirs())):
            folder.mkdir(parents=True, exist_ok=True)
            for old in folder.iterdir():
                old.unlink()
            for target in targets:
                (folder / target.name).symlink_to(target.resolve())
        self.conf.mkdir(parents=True, exist_ok=True)
        for f in (self.wheel / "conf").glob("log4j*.properties"):
            (self.conf / f.name).write_bytes(f.read_bytes())
        wheel_conf = yaml.safe_load((self.wheel / "conf" / "config.yaml").read_text()) or {}
        java_opts = str(wheel_conf.get("env", {}).get("java", {}).get("opts", {}).get("all", ""))
        s3_config = _jobs_common().s3_config

        # File systems are the cluster's (each process initializes them from its own
        # configuration): the S3 endpoint and credentials go here, not with the job.
        conf = {
            "env.java.opts.all": java_opts,
            **cluster_config(self.settings),
            **s3_config(self.settings),
        }
        if self.settings.topology == "ha":
            self.zookeeper_data.mkdir(parents=True, exist_ok=True)
            (self.conf / "zoo.cfg").write_text(
                zookeeper_config(self.settings, self.zookeeper_data))
        path = self.conf / "config.yaml"
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # holds the S3 secret
        with os.fdopen(fd, "w") as out:
            out.write("".join(f"{k}: {json.dumps(v)}\n" for k, v in conf.items()))
        (self.root / "log").mkdir(exist_ok=True)

    def env(self) -> dict[str, str]:
        """Environment of a cluster process: Flink's folders, and for thread-mode Python
        inside the TaskManager JVM the venv's site-packages and the project."""
        site = [str(p) for p in sorted(self.settings.flink_venv.glob("lib/python3*/site-packages"))]
        return {
            "FLINK_CONF_DIR": str(self.conf),
            "FLINK_LIB_DIR": str(self.lib),
            "FLINK_PLUGINS_DIR": str(self.plugins),
            "FLINK_LOG_DIR": str(self.root / "log"),
            "FLINK_PID_DIR": str(self.root),
            "PYTHONPATH": ":".join([*site, str(PROJECT_ROOT)]),
        }

    def jobmanager_argv(self) -> list[str]:
        return [
            "bash",
            str(self.wheel / "bin" / "jobmanager.sh"),
            "start-foreground",
            "-D",
            f"metrics.reporter.prom.port={self.settings.flink_metrics_port}",
        ]

    def standby_jobmanager_argv(self) -> list[str]:
        """The 'ha' topology's second JobManager: the same configuration, a REST and a metrics
        port of its own, any free RPC port (TaskManagers find the leader in ZooKeeper)."""
        return [
            "bash",
            str(self.wheel / "bin" / "jobmanager.sh"),
            "start-foreground",
            "-D",
            f"metrics.reporter.prom.port={standby_metrics_port(self.settings)}",
            "-D",
            f"rest.port={self.settings.flink_standby_rest_port}",
            "-D",
            "high-availability.jobmanager.port=0",
        ]

    @property
    def zookeeper_data(self) -> Path:
        """ZooKeeper's data: kept across restarts of the stack (a stopped stack's job comes
        back with the same id); remove ``state_dir`` to start over."""
        return self.settings.state_dir / "flink" / "zookeeper"

    def zookeeper_argv(self) -> list[str]:
        """The wheel's ZooKeeper peer (``FlinkZooKeeperQuorumPeer`` in flink-dist, with its
        shaded ZooKeeper server), peer 1 of a one-server ensemble."""
        return ["bash", str(self.wheel / "bin" / "zookeeper.sh"), "start-foreground", "1"]

    def taskmanager_argv(self, n: int) -> list[str]:
        return [
            "bash",
            str(self.wheel / "bin" / "taskmanager.sh"),
            "start-foreground",
            "-D",
            f"metrics.reporter.prom.port={self.settings.flink_metrics_port + n}",
            "-D",
            f"taskmanager.resource-id={taskmanager_id(n)}",
        ]


def standby_metrics_port(settings: Settings) -> int:
    """After the TaskManagers' (``flink_metrics_port`` + n)."""
    return settings.flink_metrics_port + settings.flink_taskmanagers + 1


def taskmanager_id(n: int) -> str:
    return f"taskmanager-{n}"


def _jobs_common() -> Any:
    """``flink.jobs.common`` (stdlib and driftloop imports only). The ``driftloop`` entry
    point runs without the project folder on ``sys.path`` (only driftloop is installed),
    so it is loaded from the project's file then."""
    try:
        from flink.jobs import common
    except ModuleNotFoundError:
        import importlib.util

        path = PROJECT_ROOT / "flink" / "jobs" / "common.py"
        spec = importlib.util.spec_from_file_location("driftloop_flink_jobs_common", path)
        if spec is None or spec.loader is None:
            raise
        common = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(common)
    return common


def rest_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.flink_rest_port}"


def rest_urls(settings: Settings) -> list[str]:
    """Every JobManager's REST API, the first JobManager's first. In the 'ha' topology the
    standby's answers too (for the leader, whichever that is): while the first JobManager
    is down the job is still seen."""
    urls = [rest_url(settings)]
    if settings.topology == "ha":
        urls.append(f"http://127.0.0.1:{settings.flink_standby_rest_port}")
    return urls


def rest_get(url: str, path: str, timeout_s: float = 3.0) -> Any:
    """GET the JobManager's REST API; None when it does not answer."""
    try:
        with urllib.request.urlopen(f"{url}{path}", timeout=timeout_s) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


def taskmanager_ids(url: str) -> set[str]:
    """Ids of the TaskManagers registered with the JobManager."""
    body = rest_get(url, "/taskmanagers")
    tms = body.get("taskmanagers", []) if isinstance(body, dict) else []
    return {str(t.get("id")) for t in tms if isinstance(t, dict)}


def first_job_summaries(urls: list[str]) -> list[dict[str, Any]] | None:
    """``job_summaries`` from the first JobManager in ``urls`` that answers."""
    for url in urls:
        jobs = job_summaries(url)
        if jobs is not None:
            return jobs
    return None


def job_summaries(url: str) -> list[dict[str, Any]] | None:
    """Each job that is not finished: name, id, state, and its last completed checkpoint
    (id, when, duration, age) with the failed-checkpoint count; None when the JobManager
    does not answer."""
    body = rest_get(url, "/jobs/overview")
    if not isinstance(body, dict):
        return None
    out = []
    for job in body.get("jobs", []):
        if job.get("state") in ("FINISHED", "CANCELED", "FAILED"):
            continue
        summary: dict[str, Any] = {
            "name": job.get("name"),
            "id": job.get("jid"),
            "state": job.get("state"),
            "last_checkpoint": None,
        }
        cps = rest_get(url, f"/jobs/{job.get('jid')}/checkpoints")
        if isinstance(cps, dict):
            counts = cps.get("counts") or {}
            summary["failed_checkpoints"] = counts.get("failed", 0)
            done = (cps.get("latest") or {}).get("completed")
            if isinstance(done, dict):
                ts = int(done.get("latest_ack_timestamp") or 0)
                summary["last_checkpoint"] = {
                    "id": done.get("id"),
                    "completed_ms": ts,
                    "age_s": round(time.time() - ts / 1000, 1) if ts else None,
                    "duration_ms": done.get("end_to_end_duration"),
                }
        out.append(summary)
    return out
