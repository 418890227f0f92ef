"""The FlinkDeployment (flink/k8s/) runs what the local session cluster runs: the same jars in
lib/ and plugins/, the same configuration keys and values, the same parallelism."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from driftloop.local.flink_cluster import PROMETHEUS_REPORTER, ClusterLayout, cluster_config
from driftloop.settings import PROJECT_ROOT, Settings
from flink.jobs.common import flink_config, flink_path

MANIFEST = PROJECT_ROOT / "flink" / "k8s" / "flinkdeployment.yaml"
POM = PROJECT_ROOT / "flink" / "pom.xml"
REQUIREMENTS = PROJECT_ROOT / "requirements" / "flink.txt"
PODMONITOR = PROJECT_ROOT / "infra" / "prometheus" / "k8s" / "podmonitor.yaml"

PER_DEPLOYMENT = re.compile(
    r"^(pipeline\.(name|jars)|python\.(client\.)?executable|execution\.checkpointing\.dir"
    r"|execution\.state-recovery\.path|(jobmanager|taskmanager)\.memory\..*"
    r"|jobmanager\.rpc\..*|.*\.bind-(host|address|port)|taskmanager\.host|rest\..*"
    r"|s3\.(endpoint|endpoint\.region|connection\.ssl\.enabled|access-key|secret-key))$"
)
"""Addresses, paths, memory and credentials: each deployment has its own."""


DEPLOYED_HA = {"high-availability.type", "high-availability.storageDir"}
"""JobManager high availability on Kubernetes (the operator's ConfigMaps); locally the 'ha'
topology's (ZooKeeper)."""

ZOOKEEPER_ONLY = re.compile(r"^high-availability\.(zookeeper\..*|cluster-id|jobmanager\.port)$")
"""The standalone cluster's ZooKeeper HA: its quorum, its cluster id, the JobManager's fixed
RPC port (on Kubernetes the operator sets these)."""


def _manifest() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


def _flink_version() -> str:
    return re.search(r"apache-flink==([\d.]+)", REQUIREMENTS.read_text()).group(1)


def _fake_distribution(tmp_path: Path) -> Settings:
    """A wheel and a make-setup cache laid out as the real ones, with the pinned versions."""
    version = _flink_version()
    connector = re.search(r"<kafka.connector.version>([^<]+)<", POM.read_text()).group(1)
    wheel = tmp_path / "venv" / "lib" / "python3.11" / "site-packages" / "pyflink"
    for d in ("lib", "opt", "plugins/metrics-prometheus", "plugins/metrics-jmx", "bin"):
        (wheel / d).mkdir(parents=True)
    (wheel / "lib" / f"flink-dist-{version}.jar").write_bytes(b"")
    (wheel / "opt" / f"flink-python-{version}.jar").write_bytes(b"")
    (wheel / "opt" / f"flink-sql-client-{version}.jar").write_bytes(b"")
    cache = tmp_path / "cache" / "flink"
    (cache / "lib").mkdir(parents=True)
    (cache / "lib" / f"flink-sql-connector-kafka-{connector}.jar").write_bytes(b"")
    (cache / "plugins" / "s3-fs-hadoop").mkdir(parents=True)
    return Settings(
        state_dir=tmp_path / "state",
        flink_venv=tmp_path / "venv",
        flink_lib_dir=cache / "lib",
        s3_endpoint_url="http://127.0.0.1:1",
    )


def test_the_deployment_loads_the_jars_and_plugins_the_local_cluster_loads(tmp_path: Path) -> None:
    layout = ClusterLayout(_fake_distribution(tmp_path))
    wheel_lib = {p.name for p in (layout.wheel / "lib").glob("*.jar")}
    added = sorted(p.name for p in layout.jars() if p.name not in wheel_lib)
    notes = _manifest()["metadata"]["annotations"]
    assert notes["driftloop.io/lib-jars"].split(",") == added
    assert notes["driftloop.io/plugins"].split(",") == sorted(p.name for p in layout.plugin_dirs())
    # The job's entry jar is the flink-python of the pinned PyFlink, the image its Flink.
    spec = _manifest()["spec"]
    version = _flink_version()
    assert spec["job"]["jarURI"] == f"local:///opt/flink/opt/flink-python-{version}.jar"
    assert spec["flinkVersion"] == "v" + "_".join(version.split(".")[:2])


def test_the_deployment_sets_the_local_configuration_keys_and_parallelism(tmp_path) -> None:
    settings = _fake_distribution(tmp_path)
    local = {
        **cluster_config(settings),
        **flink_config(settings, "preprocess-join-archive"),
        "metrics.reporter.prom.port": "9249",
    }  # locally one -D per process
    portable = {k: v for k, v in local.items() if not PER_DEPLOYMENT.match(k)}
    deployed = {k: str(v) for k, v in _manifest()["spec"]["flinkConfiguration"].items()}
    assert {k: deployed.get(k) for k in portable} == portable
    assert set(deployed) - set(local) <= {"execution.checkpointing.dir", *DEPLOYED_HA}
    assert deployed["metrics.reporter.prom.factory.class"] == PROMETHEUS_REPORTER
    job = _manifest()["spec"]["job"]
    assert job["parallelism"] == settings.flink_parallelism
    assert job["args"][job["args"].index("--pipelines") + 1] == ",".join(settings.flink_pipelines)


def test_prometheus_scrapes_the_port_the_reporter_serves() -> None:
    spec = _manifest()["spec"]
    [container] = spec["podTemplate"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert str(ports["metrics"]) == spec["flinkConfiguration"]["metrics.reporter.prom.port"]
    monitors = [
        d
        for d in yaml.safe_load_all(PODMONITOR.read_text())
        if d and d["metadata"]["name"] == "driftloop-flink"
    ]
    assert [e["port"] for e in monitors[0]["spec"]["podMetricsEndpoints"]] == ["metrics"]


def test_both_recover_a_killed_jobmanager_from_a_ha_store_under_the_checkpoints(tmp_path):
    settings = _fake_distribution(tmp_path).model_copy(
        update={"topology": "ha", "flink_checkpoint_dir": _manifest()["spec"][
            "flinkConfiguration"]["execution.checkpointing.dir"]})
    local = cluster_config(settings)
    deployed = {k: str(v) for k, v in _manifest()["spec"]["flinkConfiguration"].items()}
    ha_local = {k: v for k, v in local.items()
                if k.startswith("high-availability.") and not ZOOKEEPER_ONLY.match(k)}
    assert set(ha_local) == DEPLOYED_HA
    assert (ha_local["high-availability.type"], deployed["high-availability.type"]) == (
        "zookeeper", "kubernetes")
    # Both under the checkpoints' folder (locally Flink names s3:// through the s3a plugin).
    checkpoints = deployed["execution.checkpointing.dir"]
    assert deployed["high-availability.storageDir"] == f"{checkpoints}/ha"
    assert ha_local["high-availability.storageDir"] == flink_path(f"{checkpoints}/ha")
    # The light topology has none: its JobManager's job is submitted again.
    assert not any(k.startswith("high-availability") for k in cluster_config(
        settings.model_copy(update={"topology": "light"})))
