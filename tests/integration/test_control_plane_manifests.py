"""The cluster side of the control plane's security, as rendered by kustomize and validated
against the pinned schemas (k8s 1.34, Strimzi 0.46.1, kn func v0.50.1): cluster-local
functions behind a NetworkPolicy, a TLS + SCRAM listener with a KafkaUser per component,
and every driftloop workload wired to its user and the cluster CA."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from driftloop.manifests import kustomize_build, validate_directory, validate_func_yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONTROL = ["drift-check", "retrain-trigger", "promote"]
COMPONENTS = {"feedback-intake", "feedback-archive", "drift-check", "retrain-trigger", "promote",
              "flink", "serving", "eventing"}


def func(name: str) -> dict:
    return yaml.safe_load((ROOT / "functions" / name / "func.yaml").read_text())


def rendered(manifest_tools, directory: str) -> list[dict]:
    out = kustomize_build(ROOT / directory, manifest_tools.kustomize)
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.parametrize("name", [*CONTROL, "feedback-intake"])
def test_func_yaml_visibility_and_kafka_user(manifest_tools, name):
    path = ROOT / "functions" / name / "func.yaml"
    assert validate_func_yaml(path, manifest_tools.schemas) == []
    doc = func(name)
    labels = {lbl["key"]: lbl.get("value") for lbl in doc["deploy"]["labels"]}
    envs = {e.get("name"): e["value"] for e in doc["run"]["envs"]}
    if name in CONTROL:
        assert labels["networking.knative.dev/visibility"] == "cluster-local"
        assert envs["DRIFTLOOP_FUNCTION_OIDC_AUDIENCE"] == f"driftloop/{name}"
        assert envs["DRIFTLOOP_FUNCTION_TOKENS"].startswith("{{ secret:")
    else:  # apps reach feedback-intake from outside the cluster
        assert "networking.knative.dev/visibility" not in labels
    assert envs["DRIFTLOOP_KAFKA_USERNAME"] == f"driftloop-{name}"
    assert envs["DRIFTLOOP_KAFKA_PASSWORD"] == f"{{{{ secret:driftloop-{name}:password }}}}"
    assert {"secret": "driftloop-cluster-ca-cert",
            "path": "/etc/driftloop/kafka-ca"} in doc["run"]["volumes"]


def test_network_policy_admits_only_eventing_and_alertmanager(manifest_tools):
    report = validate_directory(ROOT / "infra/k8s/base", manifest_tools.schemas,
                                manifest_tools.kustomize)
    assert report.errors == [], "\n".join(map(str, report.errors))
    assert "networking.k8s.io/v1/NetworkPolicy" in set(report.kinds)
    docs = rendered(manifest_tools, "infra/k8s/base")
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    spec = policy["spec"]
    (expr,) = spec["podSelector"]["matchExpressions"]
    assert expr["key"] == "serving.knative.dev/service" and sorted(expr["values"]) == sorted(
        CONTROL)
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    assert "ports" not in rule
    peers = {(p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
              tuple(sorted(p.get("podSelector", {}).get("matchLabels", {}).items())))
             for p in rule["from"]}
    assert peers == {
        ("knative-eventing", ()),
        ("knative-serving", (("app", "activator"),)),
        ("kourier-system", ()),
        ("monitoring", (("app.kubernetes.io/name", "alertmanager"),)),
    }


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_kafka_tls_scram_listener_and_a_user_per_component(manifest_tools, overlay):
    docs = rendered(manifest_tools, f"infra/k8s/overlays/{overlay}")
    (kafka,) = [d for d in docs if d["kind"] == "Kafka"]
    listeners = {x["name"]: x for x in kafka["spec"]["kafka"]["listeners"]}
    assert listeners["tls"]["tls"] is True
    assert listeners["tls"]["authentication"] == {"type": "scram-sha-512"}
    plain_peers = {p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                   for p in listeners["plain"]["networkPolicyPeers"]}
    assert plain_peers == {"knative-eventing", "keda"}
    users = {d["metadata"]["name"]: d for d in docs if d["kind"] == "KafkaUser"}
    assert set(users) == {f"driftloop-{c}" for c in COMPONENTS}
    for u in users.values():
        assert u["metadata"]["labels"]["strimzi.io/cluster"] == "driftloop"
        assert u["spec"]["authentication"] == {"type": "scram-sha-512"}

    (settings,) = [d for d in docs if d["kind"] == "ConfigMap"
                   and d["metadata"]["name"] == "driftloop-settings"]
    data = settings["data"]
    assert data["DRIFTLOOP_KAFKA_BOOTSTRAP"].endswith(":9093")
    assert data["DRIFTLOOP_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert data["DRIFTLOOP_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert data["DRIFTLOOP_KAFKA_CA_FILE"] == "/etc/driftloop/kafka-ca/ca.crt"
    assert data["DRIFTLOOP_FUNCTION_OIDC_SUBJECTS"] == "system:serviceaccount:driftloop:*"

    # Every driftloop workload in the tree names its own user and mounts the cluster CA.
    for d in docs:
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "feedback-archive":
            pod = d["spec"]["template"]["spec"]
            user = "driftloop-feedback-archive"
        elif d["kind"] == "FlinkDeployment":
            pod = d["spec"]["podTemplate"]["spec"]
            user = "driftloop-flink"
        else:
            continue
        (c,) = pod["containers"]
        env = {e["name"]: e for e in c["env"]}
        assert env["DRIFTLOOP_KAFKA_USERNAME"]["value"] == user
        assert env["DRIFTLOOP_KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": user, "key": "password"}
        assert {"name": "kafka-ca", "secret": {"secretName": "driftloop-cluster-ca-cert"}} in \
            pod["volumes"]
        assert c["volumeMounts"][0]["mountPath"] == "/etc/driftloop/kafka-ca"


def test_alertmanager_sends_the_function_token(manifest_tools):
    docs = rendered(manifest_tools, "infra/alertmanager/k8s")
    (cfg,) = docs
    (hook,) = cfg["spec"]["receivers"][0]["webhookConfigs"]
    assert hook["httpConfig"]["authorization"] == {
        "type": "Bearer", "credentials": {"name": "driftloop-function-tokens",
                                          "key": "alertmanager"}}


def test_every_delivery_to_the_control_plane_names_its_audience(manifest_tools):
    """Knative Services announce no OIDC audience: each source and trigger sets the one the
    function verifies, else Eventing sends no token and every delivery is refused."""
    audiences = {name: {e.get("name"): e["value"] for e in func(name)["run"]["envs"]}[
        "DRIFTLOOP_FUNCTION_OIDC_AUDIENCE"] for name in CONTROL}
    seen = set()
    for d in rendered(manifest_tools, "eventing"):
        dest = d.get("spec", {}).get("sink") or d.get("spec", {}).get("subscriber")
        if not dest or dest.get("ref", {}).get("kind") != "Service":
            continue
        name = dest["ref"]["name"]
        if name in audiences:
            assert dest.get("audience") == audiences[name], (d["kind"], d["metadata"]["name"])
            seen.add(name)
    assert seen == set(CONTROL)
