"""JobManager high availability of the 'ha' topology: the stack's own ZooKeeper server
(``flink-zookeeper``, from the PyFlink wheel) and a session cluster whose JobManager keeps
its jobs in ZooKeeper and an HA store on the S3 server, started from the stack's component
specs with a Kafka broker of its own (its job writes ``driftloop.labeled``, which other
tests count).

A SIGKILLed JobManager's job is recovered by the standby JobManager: the same job id comes
back RUNNING, restored from its last completed checkpoint, and seen by the stack's status
through the standby; the killed JobManager, started again as a supervisor would, joins as
the standby, and the
submitter started again beside it adopts that job instead of submitting a second copy.
Without HA the restarted JobManager knows no job (the light topology submits it again).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from driftloop.local.components.flink import components
from driftloop.local.flink_cluster import job_summaries, rest_get
from driftloop.local.kafka import KafkaBroker
from driftloop.local.process import free_port, free_port_run, spawn, wait_until
from driftloop.settings import Settings
from tests.fixtures.flink import FlinkApp, wait_for
from tests.fixtures.kafka import KafkaFixture

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ha_app(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlinkApp]:
    """The join pipeline on an HA session cluster (ZooKeeper, a JobManager, a TaskManager)
    with checkpoints and the HA store on the S3 server."""
    state: Path = tmp_path_factory.mktemp("flink-ha")
    kafka = KafkaFixture(KafkaBroker(libs_dir=Settings().cache_dir / "kafka" / "libs",
                                     data_dir=state / "kafka", port=free_port(),
                                     controller_port=free_port(), heap="384m"))
    kafka.start()
    bucket = s3.new_bucket()
    settings = Settings(
        kafka_bootstrap=kafka.bootstrap, state_dir=state, blob_url=f"s3://{bucket}/lake",
        flink_checkpoint_dir=f"s3://{bucket}/checkpoints", topology="ha",
        flink_zookeeper_port=free_port(), flink_rest_port=free_port(),
        flink_standby_rest_port=free_port(),
        flink_jobmanager_rpc_port=free_port(), flink_metrics_port=free_port_run(4),
        s3_endpoint_url=s3.endpoint_url, s3_access_key_id=s3.access_key,
        s3_secret_access_key=s3.secret_key, flink_pipelines=("join",),
        flink_checkpoint_interval_ms=1000, flink_bundle_time_ms=50,
    )
    app = FlinkApp(settings)
    try:
        app.start()
        yield app
    finally:
        app.stop()
        kafka.stop()


def _checkpoints(app: FlinkApp, job_id: str) -> dict[str, Any]:
    """The job's checkpoint statistics; {} while the JobManager cannot give them yet (it
    answers 500 while the job is still initializing, or does not answer while it starts)."""
    got = rest_get(app.job["rest_url"], f"/jobs/{job_id}/checkpoints", timeout_s=10)
    return got if isinstance(got, dict) else {}


def _sigkill(app: FlinkApp, name: str) -> None:
    proc = app.cluster.procs.pop(name)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _start(app: FlinkApp, name: str) -> None:
    spec = next(s for s in app.cluster.specs if s.name == name)
    if spec.prepare is not None:
        spec.prepare()
    log = app.cluster.log_path(name)
    proc = spawn(spec.argv, log_path=log, env={**os.environ, **spec.env}, cwd=spec.cwd)
    app.cluster.procs[name] = proc
    wait_until(spec.health, timeout_s=180, what=name, alive=lambda: proc.poll() is None,
               log_path=log)


@pytest.mark.timeout(1200)
def test_a_killed_jobmanager_recovers_the_same_job_without_a_resubmission(
        ha_app: FlinkApp) -> None:
    assert [s.name for s in ha_app.cluster.specs][:2] == ["flink-zookeeper", "flink-jobmanager"]
    job_id = str(ha_app.job["job_id"])
    done = wait_for(lambda: (_checkpoints(ha_app, job_id).get("latest") or {}).get("completed"),
                    timeout_s=180, what="a completed checkpoint before the kill")
    before = int(done["id"])

    # SIGKILL the JobManager and the submitter attached to it; a supervisor restarts both.
    assert ha_app.proc is not None
    os.killpg(ha_app.proc.pid, signal.SIGKILL)
    ha_app.proc.wait(timeout=30)
    ha_app.proc = None
    _sigkill(ha_app, "flink-jobmanager")

    # While it is down, the standby leads and `driftloop status` reads the job through it.
    flink = next(s for s in components(ha_app.settings) if s.name == "flink")
    assert flink.details is not None

    def running_on_standby() -> list[dict[str, Any]] | None:
        jobs = flink.details()["jobs"] or []
        return jobs if any(j["state"] == "RUNNING" for j in jobs) else None

    jobs = wait_for(running_on_standby, timeout_s=240, what="the job RUNNING on the standby",
                    interval_s=2.0)
    assert [j["id"] for j in jobs] == [job_id]  # recovered, not submitted again
    _start(ha_app, "flink-jobmanager")

    def running() -> list[dict[str, Any]] | None:
        jobs = job_summaries(ha_app.job["rest_url"]) or []
        return jobs if any(j["state"] == "RUNNING" for j in jobs) else None

    jobs = wait_for(running, timeout_s=240, what="the job seen by the restarted JobManager",
                    interval_s=2.0)
    assert [j["id"] for j in jobs] == [job_id]
    restored = wait_for(lambda: (_checkpoints(ha_app, job_id).get("latest") or {}).get(
        "restored"), timeout_s=60, what="the job's restore")
    assert int(restored["id"]) >= before  # from its last completed checkpoint, not from zero

    # The submitter, started again, adopts the running job: still one job, the same id.
    ha_app.start()
    assert ha_app.job["job_id"] == job_id
    assert [j["id"] for j in job_summaries(ha_app.job["rest_url"]) or []] == [job_id]
    assert ha_app.proc is not None and ha_app.proc.poll() is None  # attached to it
