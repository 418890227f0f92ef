"""Every manifest builds with kustomize and validates against the pinned upstream schemas."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
import yaml

from driftloop import topics as topic_names
from driftloop.manifests import (
    ManifestBuildError,
    default_targets,
    kustomize_build,
    validate_directory,
    validate_func_yaml,
)

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ["feedback-intake", "drift-check", "retrain-trigger", "promote"]
TARGETS = {
    "feedback-intake": "intake",
    "drift-check": "drift_check",
    "retrain-trigger": "retrain_trigger",
    "promote": "promote",
}


def _assert_valid(report) -> None:
    assert report.documents > 0
    assert report.errors == [], "\n".join(map(str, report.errors))


@pytest.mark.parametrize("directory", ["eventing", "infra/k8s/base"])
def test_own_directories_build_and_validate(manifest_tools, directory):
    report = validate_directory(ROOT / directory, manifest_tools.schemas, manifest_tools.kustomize)
    _assert_valid(report)
    assert report.unvalidated == []


@pytest.mark.parametrize("directory", [str(d.relative_to(ROOT)) for d in default_targets()])
def test_every_kustomization_in_the_repo_validates(manifest_tools, directory):
    """Serving, monitoring and alternatives too; Seldon v2 kinds are listed as unvalidated."""
    report = validate_directory(ROOT / directory, manifest_tools.schemas, manifest_tools.kustomize)
    _assert_valid(report)
    for u in report.unvalidated:
        assert u.api_version.startswith("mlops.seldon.io/"), u


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_overlays_build_with_serving_monitoring_and_eventing(manifest_tools, overlay):
    report = validate_directory(
        ROOT / "infra/k8s/overlays" / overlay, manifest_tools.schemas, manifest_tools.kustomize
    )
    _assert_valid(report)
    kinds = set(report.kinds)
    assert "sources.knative.dev/v1/KafkaSource" in kinds
    assert "kafka.strimzi.io/v1beta2/Kafka" in kinds
    assert "flink.apache.org/v1beta1/FlinkDeployment" in kinds
    assert "monitoring.coreos.com/v1/PrometheusRule" in kinds
    assert "monitoring.coreos.com/v1alpha1/AlertmanagerConfig" in kinds
    # Seldon Core v2 CRDs are in no reachable registry: listed, never silently passed.
    for u in report.unvalidated:
        assert u.api_version.startswith("mlops.seldon.io/"), u


def test_every_topic_has_a_kafkatopic(manifest_tools):
    docs = yaml.safe_load_all(kustomize_build(ROOT / "infra/k8s/base", manifest_tools.kustomize))
    declared = {d["spec"]["topicName"] for d in docs if d and d["kind"] == "KafkaTopic"}
    assert declared == set(topic_names.all_topics())


def test_kafka_is_kraft_with_node_pools(manifest_tools):
    docs = list(
        yaml.safe_load_all(kustomize_build(ROOT / "infra/k8s/base", manifest_tools.kustomize))
    )
    kafka = next(d for d in docs if d["kind"] == "Kafka")
    assert kafka["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"
    assert "zookeeper" not in kafka["spec"]
    pool = next(d for d in docs if d["kind"] == "KafkaNodePool")
    assert set(pool["spec"]["roles"]) == {"controller", "broker"}


def test_kafka_sources_scale_from_zero_with_keda_and_dead_letter(manifest_tools):
    docs = yaml.safe_load_all(kustomize_build(ROOT / "eventing", manifest_tools.kustomize))
    sources = [d for d in docs if d and d["kind"] == "KafkaSource"]
    assert sources
    for s in sources:
        ann = s["metadata"]["annotations"]
        # the keys eventing-kafka-broker's KEDA autoscaler reads (test_packaging_annotations)
        assert ann["autoscaling.eventing.knative.dev/class"] == "keda.autoscaling.knative.dev"
        assert ann["autoscaling.eventing.knative.dev/min-scale"] == "0"
        assert int(ann["autoscaling.eventing.knative.dev/lag-threshold"]) > 0
        d = s["spec"]["delivery"]
        assert d["backoffPolicy"] == "exponential" and d["retry"] > 0
        assert d["deadLetterSink"]["ref"] == {
            "apiVersion": "eventing.knative.dev/v1alpha1",
            "kind": "KafkaSink",
            "name": "deadletter",
        }


@pytest.mark.parametrize("name", FUNCTIONS)
def test_func_yaml_valid_for_kn_func(manifest_tools, name):
    path = ROOT / "functions" / name / "func.yaml"
    assert validate_func_yaml(path, manifest_tools.schemas) == []
    spec = yaml.safe_load(path.read_text())
    envs = {e["name"]: e["value"] for e in spec["build"]["buildEnvs"]}
    assert envs["GOOGLE_FUNCTION_TARGET"] == TARGETS[name]
    assert spec["deploy"]["options"]["scale"]["max"] >= 1
    main = ROOT / "functions" / name / "main.py"
    if main.exists():  # the entry point names the target kn func builds
        names = {n.name for n in ast.parse(main.read_text()).body if isinstance(n, ast.FunctionDef)}
        assert TARGETS[name] in names


def test_bad_manifest_fails_naming_file_and_field(manifest_tools, tmp_path):
    bad = tmp_path / "eventing"
    shutil.copytree(ROOT / "eventing", bad)
    src = bad / "31-kafkasource-drift-check.yaml"
    doc = yaml.safe_load(src.read_text())
    doc["spec"]["delivery"]["retrys"] = 3  # typo: unknown field
    doc["spec"]["delivery"]["retry"] = "five"  # wrong type
    src.write_text(yaml.safe_dump(doc))
    sink = bad / "10-kafkasink-deadletter.yaml"
    sdoc = yaml.safe_load(sink.read_text())
    del sdoc["spec"]["topic"]  # required field missing
    sink.write_text(yaml.safe_dump(sdoc))
    report = validate_directory(bad, manifest_tools.schemas, manifest_tools.kustomize)
    got = {(Path(e.file).name, e.field) for e in report.errors}
    assert ("31-kafkasource-drift-check.yaml", "spec.delivery.retrys") in got
    assert ("31-kafkasource-drift-check.yaml", "spec.delivery.retry") in got
    assert ("10-kafkasink-deadletter.yaml", "spec.topic") in got
    text = "\n".join(map(str, report.errors))
    assert "unknown field" in text and "is not of type 'integer'" in text
    assert str(src.resolve()) in text or "31-kafkasource-drift-check.yaml" in text


def test_unknown_kind_and_broken_kustomization_fail(manifest_tools, tmp_path):
    d = tmp_path / "k"
    d.mkdir()
    (d / "kustomization.yaml").write_text("resources: [10-thing.yaml]\n")
    (d / "10-thing.yaml").write_text(
        "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g}\n"
    )
    report = validate_directory(d, manifest_tools.schemas, manifest_tools.kustomize)
    (err,) = report.errors
    assert err.field == "apiVersion" and "no upstream schema" in err.message
    assert err.file.endswith("10-thing.yaml")
    (d / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    with pytest.raises(ManifestBuildError, match=r"missing\.yaml"):
        validate_directory(d, manifest_tools.schemas, manifest_tools.kustomize)


def test_bad_func_yaml_names_field(manifest_tools, tmp_path):
    f = tmp_path / "func.yaml"
    spec = yaml.safe_load((ROOT / "functions/promote/func.yaml").read_text())
    spec["deploy"]["options"]["scale"]["min"] = "zero"
    spec["build"]["builder"] = "docker"
    f.write_text(yaml.safe_dump(spec))
    fields = {e.field for e in validate_func_yaml(f, manifest_tools.schemas)}
    assert fields == {"deploy.options.scale.min", "build.builder"}


def test_schema_sources_are_pinned(manifest_tools):
    sources = manifest_tools.schemas.sources
    for key in (
        "k8s",
        "serving",
        "eventing",
        "kafka-broker",
        "keda",
        "prometheus-operator",
        "flink-operator",
        "func",
        "strimzi",
    ):
        assert sources.get(key), key
