"""What the local Prometheus scrapes follows what runs; lag alerts follow the scalers."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from driftloop.function_metrics import FunctionMetrics, decisions, event_types
from driftloop.local.components import discover, selected
from driftloop.monitoring.kafka_lag import lag_rows
from driftloop.settings import PROJECT_ROOT, Settings

RULES = PROJECT_ROOT / "infra" / "prometheus" / "rules" / "driftloop-alerts.yml"
EVENTING = PROJECT_ROOT / "eventing"
AUTOSCALER_DEFAULTS = (PROJECT_ROOT / "infra" / "k8s" / "knative-eventing"
                       / "11-configmap-config-kafka-autoscaler.yaml")


def _scrape_jobs(settings: Settings) -> dict[str, list[str]]:
    prom = next(s for s in selected(settings) if s.name == "prometheus")
    assert prom.prepare is not None
    prom.prepare()
    rendered = settings.state_dir / "monitoring" / "prometheus.yml"
    out = subprocess.run(["promtool", "check", "config", "--syntax-only", str(rendered)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    doc = yaml.safe_load(rendered.read_text())
    return {j["job_name"]: j["static_configs"][0]["targets"] for j in doc["scrape_configs"]}


def test_prometheus_scrapes_exactly_the_selected_components(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path,
                        components="kafka,prometheus,pushgateway,alertmanager,feedback-intake")
    jobs = _scrape_jobs(settings)
    expected = {s.name: [s.metrics] for s in selected(settings) if s.metrics}
    assert jobs == expected
    # Not started, so not scraped: no DriftloopTargetDown for them.
    assert not {"dispatcher", "mlserver", "drift-check", "node-exporter", "kafka-lag"} & set(jobs)
    assert jobs["feedback-intake"] == [f"127.0.0.1:{settings.intake_port}"]
    # Nor does an absence alert watch a component left out: no mlserver, no "servers down".
    rules = settings.state_dir / "monitoring" / "rules" / RULES.name
    out = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    alerts = {r["alert"] for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"]}
    defined = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert alerts == defined - {"DriftloopModelServersDown", "DriftloopFlinkJobMissing"}


def test_every_part_of_the_stack_serves_metrics(tmp_path: Path) -> None:
    specs = {s.name: s for s in discover(Settings(state_dir=tmp_path))}
    serving = {"kafka", "kafka-lag", "node-exporter", "prometheus", "pushgateway", "alertmanager",
               "feedback-intake", "drift-check", "retrain-trigger", "promote", "dispatcher"}
    assert serving <= set(specs)
    assert all(specs[name].metrics for name in serving), {n: specs[n].metrics for n in serving}
    if "mlserver" in specs:
        assert specs["mlserver"].metrics and specs["serving-stream"].metrics
    if "flink" in specs:  # the session cluster: each JobManager and TaskManager process
        assert specs["flink-jobmanager"].metrics and specs["flink-taskmanager-1"].metrics
    jobs = _scrape_jobs(Settings(state_dir=tmp_path))
    assert set(jobs) == {name for name, s in specs.items() if s.metrics}


def _capacities() -> dict[str, int]:
    """Consumer group -> lag at which its scaler is at its maximum (lag threshold x max
    replicas), for every scaled consumer in eventing/; a Trigger's group under both its
    local (dispatcher) and its cluster (eventing-kafka-broker) name."""
    defaults = yaml.safe_load(AUTOSCALER_DEFAULTS.read_text())["data"]
    docs = [d for p in sorted(EVENTING.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text())
            if d]
    bridge = next(d["spec"]["consumerGroup"] for d in docs if d["kind"] == "KafkaSource"
                  and d["spec"]["sink"]["ref"]["kind"] == "Broker")
    out: dict[str, int] = {}
    for doc in docs:
        if doc["kind"] == "ScaledObject":
            for trig in doc["spec"]["triggers"]:
                if trig["type"] == "kafka":
                    out[trig["metadata"]["consumerGroup"]] = (
                        int(trig["metadata"]["lagThreshold"]) * int(doc["spec"]["maxReplicaCount"]))
        ann = doc.get("metadata", {}).get("annotations") or {}
        if "autoscaling.eventing.knative.dev/lag-threshold" not in ann:
            continue
        cap = int(ann["autoscaling.eventing.knative.dev/lag-threshold"]) * int(
            ann.get("autoscaling.eventing.knative.dev/max-scale", defaults["max-scale"]))
        name = doc["metadata"]["name"]
        if doc["kind"] == "KafkaSource":
            out[doc["spec"]["consumerGroup"]] = cap
        elif doc["kind"] == "Trigger":
            out[f"{bridge}.{name}"] = cap
            out[f"knative-trigger-driftloop-{name}"] = cap
    return out


def _arm_threshold(expr: str, group: str) -> list[int]:
    """Thresholds of the alert's arms whose consumergroup matchers select ``group``."""
    hits = []
    for matchers, threshold in re.findall(r"kafka_consumergroup_lag\{([^}]*)\}\) > (\d+)", expr):
        ok = True
        for op, value in re.findall(r'consumergroup(=~|!~|!=|=)"([^"]*)"', matchers):
            match = (re.fullmatch(value, group) is not None) if "~" in op else value == group
            ok = ok and (match if op in ("=", "=~") else not match)
        if ok:
            hits.append(int(threshold))
    return hits


def test_lag_alert_thresholds_are_the_scalers_capacity() -> None:
    """Lag alerts fire where scaling ends: a mismatch is an alert on lag the scaler still
    absorbs, or silence while it cannot."""
    capacities = _capacities()
    assert len(capacities) >= 5
    rule = next(r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
                if r.get("alert") == "DriftloopKafkaConsumerLagGrowing")
    expr = " ".join(rule["expr"].split())
    got = {g: _arm_threshold(expr, g) for g in capacities}
    assert got == {g: [cap] for g, cap in capacities.items()}


def test_function_metrics_count_types_reasons_and_decisions() -> None:
    m = FunctionMetrics()
    m.observe("POST", {"ce-type": "io.driftloop.prediction.v1"}, b"{}", 200,
              b'{"model": "digits", "dataset_drift": true}', 0.01)
    m.observe("POST", {"Content-Type": "application/cloudevents-batch+json"},
              b'[{"type": "a.b"}, {"type": "a.b"}, 3]', 400,
              b'{"error": "invalid_event", "message": "x"}', 0.02)
    m.observe("POST", {}, b"{}", 202, b'{"decision": {"retrain": true}, "run_id": "r"}', 0.5)
    m.observe("POST", {}, b"{}", 503, b"not json", 0.5)
    page = m.exposition().decode()
    for line in (
        'driftloop_function_events_total{type="io.driftloop.prediction.v1"} 1.0',
        'driftloop_function_events_total{type="other"} 2.0',
        'driftloop_function_events_total{type="unreadable"} 1.0',
        'driftloop_function_events_total{type="none"} 2.0',
        'driftloop_function_errors_total{reason="invalid_event"} 1.0',
        'driftloop_function_errors_total{reason="http_503"} 1.0',
        'driftloop_function_decisions_total{decision="drift"} 1.0',
        'driftloop_function_decisions_total{decision="retrain"} 1.0',
        'driftloop_function_decisions_total{decision="no_retrain"} 0.0',
        'driftloop_function_requests_total{code="202",method="POST"} 1.0',
    ):
        assert line in page, line
    assert 'driftloop_function_request_seconds_count{method="POST"} 4.0' in page


def test_event_type_labels_stay_bounded() -> None:
    """The type is the caller's word: made-up types share one series, never one each."""
    assert event_types({"ce-type": "x" * 500}, b"") == ["other"]
    made_up = [event_types({"ce-type": f"io.example.{i}"}, b"")[0] for i in range(50)]
    assert set(made_up) == {"other"}
    assert event_types({"ce-type": "io.driftloop.feedback.v1"}, b"") == [
        "io.driftloop.feedback.v1"]
    assert event_types({"ce-type": ""}, b"") == ["unreadable"]
    assert event_types({"content-type": "application/cloudevents+json"}, b"{") == ["unreadable"]
    assert decisions([{"dataset_drift": False}, {"decision": {"retrain": False}}, "x"]) == [
        "no_drift", "no_retrain"]


def test_lag_is_end_minus_committed_never_negative() -> None:
    committed = {("t", 0): 5, ("t", 1): 9, ("u", 0): 3}
    ends = {("t", 0): 12, ("t", 1): 7}
    assert lag_rows(committed, ends) == [("t", 0, 7), ("t", 1, 0), ("u", 0, 0)]


def test_cluster_brokers_load_the_local_jmx_rules() -> None:
    """Local broker and cluster brokers export the same names (one alert and panel set)."""
    local = (PROJECT_ROOT / "infra" / "kafka" / "jmx-exporter.yml").read_text()
    cm = yaml.safe_load((PROJECT_ROOT / "infra" / "k8s" / "base"
                         / "42-configmap-kafka-metrics.yaml").read_text())
    assert cm["data"]["kafka-metrics-config.yml"] == local
    kafka = yaml.safe_load((PROJECT_ROOT / "infra" / "k8s" / "base"
                            / "11-kafka-driftloop.yaml").read_text())
    ref = kafka["spec"]["kafka"]["metricsConfig"]["valueFrom"]["configMapKeyRef"]
    assert (ref["name"], ref["key"]) == (cm["metadata"]["name"], "kafka-metrics-config.yml")
    assert kafka["spec"]["kafkaExporter"]["groupRegex"] == ".*"


def test_metric_names_of_a_query() -> None:
    from driftloop.monitoring.promql import metric_names

    expr = ('histogram_quantile(0.99, sum by (model, le) (rate(a_bucket{model=~"$model",'
            'x="b_c"}[5m]))) / on (job) group_left (instance) b_total offset 5m > 1e3 '
            'or vector(0) and c:recorded')
    assert metric_names(expr) == {"a_bucket", "b_total", "c:recorded"}


def test_stream_metrics_read_the_predictor_counters() -> None:
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry, generate_latest

    from driftloop.monitoring.stream_metrics import StreamCollector

    state = SimpleNamespace(processed=7, dead_lettered=2, queue_depth=40)
    reg = CollectorRegistry()
    reg.register(StreamCollector(state))  # type: ignore[arg-type]
    state.processed = 9
    page = generate_latest(reg).decode()
    assert 'driftloop_serving_stream_records_total{outcome="predicted"} 9.0' in page
    assert 'driftloop_serving_stream_records_total{outcome="dead_lettered"} 2.0' in page
    assert "driftloop_serving_stream_queue_depth 40.0" in page
