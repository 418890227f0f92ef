"""Where training runs: one interface, four backends.

- ``local`` (default): a subprocess of this interpreter running ``driftloop.retrain.job``;
  a watcher thread records a crash (non-zero exit without a final status) in the run store.
- ``kubernetes``: a batch/v1 Job rendered from ``job-template.yaml`` and created with the
  kubernetes client (imported only when used).
- ``airflow``: a DAG run through Airflow's stable REST API (the DAG: ``render_airflow_dag``).
- ``kubeflow``: a run of a Kubeflow Pipelines pipeline through the kfp client (lazy; the
  pipeline: ``driftloop.retrain.kfp_pipeline``).

Every backend runs the same job entry point with ``--model`` and ``--run-id``; the job
writes its own status, so the function never waits for training.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from driftloop.annotations import MODEL_LABEL, RUN_ID_LABEL
from driftloop.errors import BadRequest, Unavailable
from driftloop.retrain.state import RunStore, iso, now_utc
from driftloop.settings import PROJECT_ROOT, Settings

log = logging.getLogger("driftloop.retrain")
TEMPLATE = Path(__file__).with_name("job-template.yaml")


@dataclass(frozen=True)
class TrainingRequest:
    model: str
    run_id: str
    params: Mapping[str, Any]


class Backend(Protocol):
    name: str

    def start(self, request: TrainingRequest) -> str:
        """Start the run; returns a handle (pid, Job name, DAG run id, ...)."""
        ...


def job_argv(request: TrainingRequest) -> list[str]:
    return ["-m", "driftloop.retrain.job", "--model", request.model, "--run-id", request.run_id,
            "--params", json.dumps(dict(request.params))]


def job_env(settings: Settings) -> dict[str, str]:
    """``DRIFTLOOP_*`` variables for the job (secrets included: passed, never logged)."""
    env: dict[str, str] = {}
    for name, value in settings.reveal().items():
        if value is not None and value != "":
            env[f"DRIFTLOOP_{name.upper()}"] = str(value)
    env["DRIFTLOOP_BLOB_URL"] = settings.resolved_blob_url
    return env


class LocalBackend:
    """A child process per run; a daemon thread reaps it and records crashes."""

    name = "local"

    def __init__(self, settings: Settings, runs: RunStore) -> None:
        self.settings, self.runs = settings, runs
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, request: TrainingRequest) -> str:
        import os

        log_dir = self.settings.state_dir / "retrain" / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{request.model}-{request.run_id}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLOOP_")}
        env.update(job_env(self.settings))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT),
                                                          env.get("PYTHONPATH")]))
        with log_path.open("ab") as out:
            proc = subprocess.Popen([sys.executable, *job_argv(request)], cwd=PROJECT_ROOT,
                                    env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.processes[request.run_id] = proc
        threading.Thread(target=self._reap, args=(request, proc, log_path), daemon=True,
                         name=f"reap-{request.run_id}").start()
        return f"pid:{proc.pid} log:{log_path}"

    def _reap(self, request: TrainingRequest, proc: subprocess.Popen[bytes],
              log_path: Path) -> None:
        code = proc.wait()
        try:
            run = self.runs.get(request.model, request.run_id)
        except Exception:
            log.exception("run %s vanished from the run store", request.run_id)
            return
        if run.status in ("requested", "running"):
            tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            self.runs.update(request.model, request.run_id, status="failed",
                             finished_at=iso(now_utc()), exit_code=code,
                             error=f"training process exited with {code} without a result; "
                             f"log tail: {tail.strip()[-500:]}")
        if code != 0:
            log.error("training run %s of %s failed (exit %s); log: %s", request.run_id,
                      request.model, code, log_path)

    def wait(self, run_id: str, timeout_s: float | None = None) -> int | None:
        proc = self.processes.get(run_id)
        return proc.wait(timeout=timeout_s) if proc else None


def render_job(settings: Settings, request: TrainingRequest, *,
               template: Path = TEMPLATE) -> dict[str, Any]:
    """The Kubernetes Job manifest of one run (pure; no cluster needed)."""
    doc: dict[str, Any] = yaml.safe_load(template.read_text())
    name = f"driftloop-train-{request.model}-{request.run_id}"[:63].rstrip("-.")
    doc["metadata"]["name"] = name
    doc["metadata"]["namespace"] = settings.k8s_namespace
    doc["metadata"]["labels"][MODEL_LABEL] = request.model
    doc["metadata"]["labels"][RUN_ID_LABEL] = request.run_id
    pod = doc["spec"]["template"]
    pod["metadata"]["labels"][MODEL_LABEL] = request.model
    container = pod["spec"]["containers"][0]
    container["image"] = settings.k8s_training_image
    container["args"] = job_argv(request)
    return doc


class KubernetesBackend:
    name = "kubernetes"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def start(self, request: TrainingRequest) -> str:
        from driftloop.kube import kube_client

        client = kube_client("the kubernetes backend")
        body = render_job(self.settings, request)
        client.BatchV1Api().create_namespaced_job(self.settings.k8s_namespace, body)
        return f"job/{body['metadata']['name']}"


class AirflowBackend:
    """``POST /api/v1/dags/<dag>/dagRuns`` with the run as the DAG run's conf."""

    name = "airflow"

    def __init__(self, settings: Settings) -> None:
        if not settings.airflow_url:
            raise BadRequest("the airflow backend needs DRIFTLOOP_AIRFLOW_URL")
        self.settings = settings

    def start(self, request: TrainingRequest) -> str:
        import httpx

        base = self.settings.airflow_url.rstrip("/")
        url = f"{base}/api/v1/dags/{self.settings.airflow_dag}/dagRuns"
        body = {"dag_run_id": f"driftloop-{request.run_id}",
                "conf": {"model": request.model, "run_id": request.run_id,
                         "params": dict(request.params)}}
        try:
            r = httpx.post(url, json=body, timeout=30)
        except httpx.HTTPError as e:
            raise Unavailable(f"Airflow unreachable: {e}") from e
        if r.status_code >= 300:
            raise Unavailable(f"Airflow answered {r.status_code}: {r.text[:300]}")
        return f"dag_run/{body['dag_run_id']}"


AIRFLOW_DAG_TEMPLATE = Path(__file__).with_name("airflow_dag.py.tmpl")


def render_airflow_dag(dag_id: str, *, python: str = sys.executable,
                       project_root: Path = PROJECT_ROOT) -> str:
    """The DAG file the airflow backend triggers (``dag_id`` = ``DRIFTLOOP_AIRFLOW_DAG``):
    drop it in Airflow's dags folder; ``python`` is the interpreter that has driftloop."""
    text = AIRFLOW_DAG_TEMPLATE.read_text()
    for name, value in (("__DAG_ID__", dag_id), ("__PYTHON__", python),
                        ("__PROJECT_ROOT__", str(project_root))):
        text = text.replace(name, repr(value))
    return text


class KubeflowBackend:
    """Runs the pipeline ``driftloop.retrain.kfp_pipeline`` compiles (uploaded under
    ``DRIFTLOOP_KFP_PIPELINE``)."""

    name = "kubeflow"

    def __init__(self, settings: Settings) -> None:
        if not settings.kfp_host:
            raise BadRequest("the kubeflow backend needs DRIFTLOOP_KFP_HOST")
        self.settings = settings

    def start(self, request: TrainingRequest) -> str:
        try:
            import kfp
        except ImportError as e:
            raise Unavailable("the kubeflow backend needs the 'kfp' package") from e
        client = kfp.Client(host=self.settings.kfp_host)
        pipeline_id = client.get_pipeline_id(self.settings.kfp_pipeline)
        experiment = client.create_experiment(f"driftloop-{request.model}")
        run = client.run_pipeline(
            experiment_id=experiment.experiment_id, job_name=f"train-{request.run_id}",
            pipeline_id=pipeline_id,
            params={"model": request.model, "run_id": request.run_id,
                    "params": json.dumps(dict(request.params))})
        return f"kfp_run/{run.run_id}"


def backend_for(name: str, settings: Settings, runs: RunStore) -> Backend:
    if name == "local":
        return LocalBackend(settings, runs)
    if name == "kubernetes":
        return KubernetesBackend(settings)
    if name == "airflow":
        return AirflowBackend(settings)
    if name == "kubeflow":
        return KubeflowBackend(settings)
    raise BadRequest(f"unknown training backend {name!r}; known: local, kubernetes, airflow, "
                     "kubeflow")
