"""Monitoring configuration: rules tested with promtool, manifests and dashboard consistent."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from driftloop.local.components import monitoring as component
from driftloop.monitoring import config
from driftloop.settings import PROJECT_ROOT, Settings

INFRA = PROJECT_ROOT / "infra"
RULES = INFRA / "prometheus" / "rules" / "driftloop-alerts.yml"
ALERTS = {
    "DriftloopLatencyP99High",
    "DriftloopErrorRateHigh",
    "DriftloopNoPredictions",
    "DriftloopQualityLow",
    "DriftloopEstimatedQualityLow",
    "DriftloopDriftDetected",
    "DriftloopFeedbackVolumeAnomaly",
    "DriftloopTargetDown",
    "DriftloopFeedbackIntakeDown",
    "DriftloopModelServersDown",
    "DriftloopDispatcherRouteFailing",
    "DriftloopDriftCheckStale",
    "DriftloopFlinkJobRestarting",
    "DriftloopFlinkCheckpointsFailing",
    "DriftloopFlinkJobMissing",
    "DriftloopFlinkLagGrowing",
    "DriftloopHostDiskAlmostFull",
    "DriftloopHostMemoryPressure",
    "DriftloopKafkaUnderReplicatedPartitions",
    "DriftloopKafkaOfflinePartitions",
    "DriftloopKafkaConsumerLagGrowing",
    "DriftloopKafkaLagUnknown",
}


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)


def test_every_alert_rule_has_a_promtool_unit_test() -> None:
    tests = INFRA / "prometheus" / "tests" / "driftloop-alerts.test.yml"
    out = _run("promtool", "test", "rules", str(tests))
    assert out.returncode == 0, out.stdout + out.stderr
    tested = {
        t["alertname"]
        for case in yaml.safe_load(tests.read_text())["tests"]
        for t in case.get("alert_rule_test", [])
    }
    defined = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert defined == ALERTS
    assert tested == defined


def test_rules_pass_promtool_check() -> None:
    out = _run("promtool", "check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr


def test_prometheusrule_groups_equal_the_rules_file() -> None:
    rule = yaml.safe_load((INFRA / "prometheus" / "k8s" / "prometheusrule.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_kustomizations_list_existing_files() -> None:
    for folder in (INFRA / "prometheus" / "k8s", INFRA / "alertmanager" / "k8s"):
        kust = yaml.safe_load((folder / "kustomization.yaml").read_text())
        assert kust["resources"]
        for res in kust["resources"]:
            docs = list(yaml.safe_load_all((folder / res).read_text()))
            assert all(d["apiVersion"].startswith("monitoring.coreos.com/") for d in docs)
    kinds = {
        d["kind"]
        for f in (INFRA / "prometheus" / "k8s").glob("*monitor.yaml")
        for d in yaml.safe_load_all(f.read_text())
    }
    assert kinds == {"ServiceMonitor", "PodMonitor"}


def test_rendered_configs_pass_promtool_and_amtool(tmp_path: Path) -> None:
    settings = Settings(
        state_dir=tmp_path,
        alert_webhook_url="http://127.0.0.1:9999/hook",
        flink_metrics_targets="127.0.0.1:9249, 127.0.0.1:9250",
    )
    files = config.write_configs(settings)
    out = _run("promtool", "check", "config", str(files.prometheus))
    assert out.returncode == 0, out.stdout + out.stderr
    out = _run("amtool", "check-config", str(files.alertmanager))
    assert out.returncode == 0, out.stdout + out.stderr
    prom = yaml.safe_load(files.prometheus.read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert {"pushgateway", "feedback-intake", "mlserver", "flink"} <= set(jobs)
    assert "functions" not in jobs  # no targets named: no job
    assert jobs["dispatcher"]["static_configs"][0]["targets"] == [
        f"127.0.0.1:{settings.dispatcher_metrics_port}"
    ]
    assert jobs["pushgateway"]["honor_labels"] is True
    assert jobs["flink"]["static_configs"][0]["targets"] == ["127.0.0.1:9249", "127.0.0.1:9250"]
    am = yaml.safe_load(files.alertmanager.read_text())
    assert am["receivers"][0]["webhook_configs"][0]["url"] == "http://127.0.0.1:9999/hook"


def test_local_components_are_named_and_ordered(tmp_path: Path) -> None:
    specs = component.components(Settings(state_dir=tmp_path))
    assert {s.name for s in specs} == {"prometheus", "pushgateway", "alertmanager",
                                       "node-exporter"}
    assert {s.order for s in specs} == {20}
    by_name = {s.name: s for s in specs}
    assert by_name["alertmanager"].ports == (9094,)
    by_name["prometheus"].prepare()  # renders the configuration into the state dir
    assert (tmp_path / "monitoring" / "prometheus.yml").is_file()


def test_grafana_dashboard_structure() -> None:
    dash = json.loads((INFRA / "grafana" / "driftloop-overview.json").read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 30
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p.get("targets", []))
    for needed in (
        "driftloop_model_latency_seconds_bucket",
        "driftloop_model_errors_total",
        "driftloop_model_requests_total",
        "driftloop_quality",
        "driftloop_drift_score",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ):
        assert needed in exprs
    rows = [p["title"] for p in dash["panels"] if p["type"] == "row"]
    assert rows == ["Models", "Quality and drift", "Host (node-exporter)", "Kafka", "Functions",
                    "Dispatcher", "Flink", "Processes and scrapes"]
    for p in dash["panels"]:
        if p["type"] == "row":
            assert p["gridPos"]["w"] == 24 and not p["panels"]
            continue
        assert p["type"] and p["title"] and p["targets"]
        assert {"h", "w", "x", "y"} <= set(p["gridPos"])
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        for t in p["targets"]:
            assert t["refId"] and t["expr"]
            for var in re.findall(r"\$(\w+)", t["expr"]):
                assert var in {v["name"] for v in dash["templating"]["list"]}
