"""Submitting the application to a running session cluster (``flink_target=session``).

The job goes to the JobManager's REST API at ``127.0.0.1:flink_rest_port`` the way
``flink run -m host:port`` sends it (execution target ``remote``). The cluster's class path
already holds the Kafka connector (``driftloop.local.flink_cluster``, like the Kubernetes
image), so no jar is shipped with the job: the client only loads the connectors into its
own class loader to plan the tables.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import TYPE_CHECKING, Any

from driftloop.settings import Settings

if TYPE_CHECKING:
    from pyflink.datastream import StreamExecutionEnvironment

__all__ = [
    "ACTIVE_STATES",
    "find_active_job",
    "remote_config",
    "remote_environment",
    "wait_for_end",
]

ACTIVE_STATES = (
    "INITIALIZING",
    "CREATED",
    "RUNNING",
    "FAILING",
    "CANCELLING",
    "RESTARTING",
    "RECONCILING",
    "SUSPENDED",
)
"""Job states in which the job still holds (or will hold) the cluster's slots."""

CLIENT_ONLY_KEYS = ("pipeline.jars", "rest.bind-address", "rest.bind-port")
"""Keys of the mini-cluster configuration a session cluster sets for itself."""


def rest_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.flink_rest_port}"


def remote_config(conf: dict[str, str], settings: Settings) -> dict[str, str]:
    """The job's configuration for remote execution on the session cluster."""
    out = {k: v for k, v in conf.items() if k not in CLIENT_ONLY_KEYS}
    out |= {
        "execution.target": "remote",
        "rest.address": "127.0.0.1",
        "rest.port": str(settings.flink_rest_port),
    }
    return out


def remote_environment(j_configuration: Any, settings: Settings) -> StreamExecutionEnvironment:
    """A StreamExecutionEnvironment that submits to the session cluster.

    PyFlink's ``get_execution_environment`` always builds a local one outside ``flink run``;
    Java's constructor honours ``execution.target``."""
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.java_gateway import get_gateway
    from pyflink.util.java_utils import add_jars_to_context_class_loader

    from flink.jobs.common import lib_dir

    jars = [p.resolve().as_uri() for p in sorted(lib_dir(settings).glob("*.jar"))]
    if jars:
        add_jars_to_context_class_loader(jars)
    jvm = get_gateway().jvm
    j_env = jvm.org.apache.flink.streaming.api.environment.StreamExecutionEnvironment(
        j_configuration
    )
    return StreamExecutionEnvironment(j_env)


def _get(url: str, timeout_s: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        return json.loads(r.read())


def find_active_job(settings: Settings, name: str) -> str | None:
    """The id of a job called ``name`` that still runs on the cluster: a restarted submitter
    adopts it instead of running the pipelines twice."""
    body = _get(f"{rest_url(settings)}/jobs/overview")
    for job in body.get("jobs", []):
        if job.get("name") == name and job.get("state") in ACTIVE_STATES:
            return str(job["jid"])
    return None


def wait_for_end(settings: Settings, job_id: str, poll_s: float = 5.0) -> str:
    """Block while the job is active; its final state (or UNREACHABLE when the cluster
    went away)."""
    failures = 0
    while True:
        try:
            state = str(_get(f"{rest_url(settings)}/jobs/{job_id}").get("state"))
            failures = 0
        except (OSError, ValueError):
            failures += 1
            if failures >= 3:
                return "UNREACHABLE"
            state = "UNKNOWN"
        if state not in (*ACTIVE_STATES, "UNKNOWN"):
            return state
        time.sleep(poll_s)
