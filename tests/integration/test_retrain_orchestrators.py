"""The optional training orchestrators, for real: the rendered DAG runs in Airflow
(``airflow dags test``, SQLite metadata DB, its own venv) and trains a digits version into
the registry; the Kubeflow pipeline compiles with the kfp compiler, its spec parses as a
PipelineSpec and loads back as a component, and its component runs under kfp's local
SubprocessRunner, training a version too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from driftloop.blob import open_store
from driftloop.registry import Registry
from driftloop.retrain.backends import render_airflow_dag
from driftloop.retrain.state import RunStore
from driftloop.settings import PROJECT_ROOT, Settings

AIRFLOW = PROJECT_ROOT / ".venv-airflow" / "bin" / "airflow"
KFP_PYTHON = PROJECT_ROOT / ".venv-kfp" / "bin" / "python"


def job_env(tmp: Path, kafka_bootstrap: str) -> tuple[dict[str, str], str]:
    blob = (tmp / "blobs").as_uri()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTLOOP_", "AIRFLOW"))}
    env.update({"DRIFTLOOP_BLOB_URL": blob, "DRIFTLOOP_KAFKA_BOOTSTRAP": kafka_bootstrap,
                "DRIFTLOOP_STATE_DIR": str(tmp / "state")})
    return env, blob


def trained(blob: str, run_id: str) -> tuple[str, list[str]]:
    store = open_store(blob, Settings())
    run = RunStore(store).get("digits", run_id)
    assert run.status == "succeeded", run
    return str(run.version), Registry(store).versions("digits")


def test_airflow_dag_trains_a_version(kafka, tmp_path):
    env, blob = job_env(tmp_path, kafka.bootstrap)
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "driftloop_train.py").write_text(
        render_airflow_dag("driftloop_train", python=sys.executable))
    env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
                "AIRFLOW__CORE__UNIT_TEST_MODE": "False"})
    migrate = subprocess.run([str(AIRFLOW), "db", "migrate"], env=env, capture_output=True,
                             text=True, timeout=600)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    conf = {"model": "digits", "run_id": "airflow-1", "params": {"note": "x'; touch /tmp/no"}}
    run = subprocess.run([str(AIRFLOW), "dags", "test", "-c", json.dumps(conf),
                          "driftloop_train"], env=env, capture_output=True, text=True,
                         timeout=900)
    out = run.stdout + run.stderr
    assert run.returncode == 0 and "state=success" in out.replace(" ", ""), out[-4000:]
    version, versions = trained(blob, "airflow-1")
    assert version in versions


def test_kfp_pipeline_compiles_to_a_valid_spec(tmp_path):
    out = tmp_path / "pipeline.yaml"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    subprocess.run([str(KFP_PYTHON), "-m", "driftloop.retrain.kfp_pipeline", str(out),
                    "--image", "registry.example/driftloop:1"], env=env, check=True,
                   timeout=300)
    check = textwrap.dedent(f"""
        import json, yaml
        from google.protobuf import json_format
        from kfp import components
        from kfp.pipeline_spec import pipeline_spec_pb2
        doc = yaml.safe_load(open({str(out)!r}))
        spec = json_format.ParseDict(doc, pipeline_spec_pb2.PipelineSpec())  # unknown: error
        loaded = components.load_component_from_file({str(out)!r})
        params = spec.root.input_definitions.parameters
        execs = spec.deployment_spec['executors']
        (container,) = [e['container'] for e in execs.values()]
        print(json.dumps({{"name": spec.pipeline_info.name, "loaded": loaded.name,
                          "params": sorted(params), "image": container['image'],
                          "program": " ".join(container['args'])}}))
    """)
    r = subprocess.run([str(KFP_PYTHON), "-c", check], capture_output=True, text=True,
                       timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["name"] == "driftloop-train" and got["loaded"] == "driftloop-train"
    assert got["params"] == ["model", "params", "run_id"]
    assert got["image"] == "registry.example/driftloop:1"
    assert "train" in got["program"]


def test_kfp_component_runs_locally_and_trains(kafka, tmp_path):
    env, blob = job_env(tmp_path, kafka.bootstrap)
    env.update({"PYTHONPATH": str(PROJECT_ROOT), "DRIFTLOOP_JOB_PYTHON": sys.executable})
    script = textwrap.dedent(f"""
        from kfp import local
        from driftloop.retrain import kfp_pipeline
        local.init(runner=local.SubprocessRunner(use_venv=False),
                   pipeline_root={str(tmp_path / "kfp-root")!r})
        pipeline = kfp_pipeline.build()
        # params by hand: a run with no feedback trains on the base data (else skipped)
        task = pipeline(model="digits", run_id="kfp-1", params='{{"note": "kfp"}}')
        print("VERSION=" + task.output)
    """)
    r = subprocess.run([str(KFP_PYTHON), "-c", script], env=env, capture_output=True,
                       text=True, timeout=900, cwd=tmp_path, check=False)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    version, versions = trained(blob, "kfp-1")
    assert f"VERSION={version}" in r.stdout and version in versions


@pytest.fixture(autouse=True)
def _orchestrators_installed():
    """make setup's 80-orchestrators step installs both venvs; without them this is an
    environment error, not a pass."""
    assert AIRFLOW.exists() and KFP_PYTHON.exists(), "run make setup (80-orchestrators.sh)"
