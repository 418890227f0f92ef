"""Pure parts of the annotation check: Go/Java constants, key extraction, the verdicts."""

from __future__ import annotations

import json

import pytest

from driftloop.annotations import (
    OWN_KEYS,
    Catalogue,
    check_document,
    func_yaml_keys,
    go_constants,
    is_key,
    java_constants,
    manifest_keys,
)

KB = "knative.dev/eventing-kafka-broker"

AUTOSCALER_GO = """package autoscaler

const (
\t// Autoscaling refers to the autoscaling group.
\tAutoscaling = "autoscaling.eventing.knative.dev"
\tAutoscalingClassAnnotation = Autoscaling + "/class" // trailing comment
\tAutoscalingClassDisabledAnnotationValue = "disabled"
\tAutoscalingMinScaleAnnotation = Autoscaling + "/min-scale"
\tAutoscalingMaxScaleAnnotation = Autoscaling + "/max-scale"
\tAutoscalingLagThreshold = Autoscaling + "/lag-threshold"
\tDefaultLagThreshold = 100
)
"""

KEDA_GO = """package keda

import (
\t"context"

\t"knative.dev/eventing-kafka-broker/control-plane/pkg/autoscaler"
)

const (
\tAutoscalerClass = "keda.autoscaling.knative.dev"
\tShadow = autoscaler.Autoscaling + "/x"
)
"""

ORDER_GO = """package v1

type DeliveryOrdering string

const (
\tOrdered DeliveryOrdering = "ordered"
\tUnordered DeliveryOrdering = "unordered"
)
"""

LEGACY_GO = """package v1

const (
\tclassAnnotation = "autoscaling.knative.dev/class"
\tlagAnnotation = "keda.autoscaling.knative.dev/kafkaLagThreshold"
\tversion = "sources.knative.dev/v1"
)
"""

FEATURES_GO = """package config

func f() {
\tasFlag("controller-autoscaler-keda", &x)
\tasTemplate("brokers-topic-template", &y)
}
"""

EVENTING_GO = """package v1

type BackoffPolicyType string

const (
\tBackoffPolicyLinear BackoffPolicyType = "linear"
\tBackoffPolicyExponential BackoffPolicyType = "exponential"
)
"""

FEATURE_GO = """package feature

type Flag string

const (
\tEnabled Flag = "Enabled"
\tDisabled Flag = "Disabled"
\tAllowed Flag = "Allowed"
)
"""

SERVING_GO = """package autoscaling

const (
\tGroupName = "autoscaling.knative.dev"
\tClassAnnotationKey = GroupName + "/class"
\tKPA = "kpa.autoscaling.knative.dev"
\tHPA = "hpa.autoscaling.knative.dev"
\tMinScaleAnnotationKey = GroupName + "/min-scale"
\tMetricAnnotationKey = GroupName + "/metric"
\tConcurrency = "concurrency"
\tRPS = "rps"
\tCPU = "cpu"
\tMemory = "memory"
)
"""

STRIMZI_JAVA = """package io.strimzi.api;
public class ResourceLabels {
    /** The domain. */
    public static final String STRIMZI_DOMAIN = "strimzi.io/";
    public static final String STRIMZI_CLUSTER_LABEL = STRIMZI_DOMAIN + "cluster";
    public static final String NOT_A_KEY = "hello world";
}
"""

FLINK_JAVA = """package org.apache.flink.kubernetes.operator.api;
public class CrdConstants {
    public static final String API_GROUP = "flink.apache.org";
    public static final String LABEL_TARGET_SESSION = "target.session";
}
"""


@pytest.fixture
def sources(tmp_path):
    files = {
        "kafka-broker/control-plane/pkg/autoscaler/autoscaler_api.go": AUTOSCALER_GO,
        "kafka-broker/control-plane/pkg/autoscaler/keda/keda.go": KEDA_GO,
        "kafka-broker/control-plane/pkg/apis/sources/v1/order.go": ORDER_GO,
        "kafka-broker/control-plane/pkg/apis/sources/v1/kafka_defaults.go": LEGACY_GO,
        "kafka-broker/control-plane/pkg/apis/config/features.go": FEATURES_GO,
        "kafka-broker/control-plane/pkg/kafka/broker_class.go": (
            'package kafka\n\nconst (\n\tBrokerClass = "Kafka"\n'
            '\tNamespacedBrokerClass = "KafkaNamespaced"\n)\n'
        ),
        "eventing/pkg/apis/duck/v1/delivery_types.go": EVENTING_GO,
        "eventing/pkg/apis/feature/features.go": FEATURE_GO,
        "eventing/pkg/apis/eventing/register.go": (
            'package eventing\n\nconst MTChannelBrokerClassValue = "MTChannelBasedBroker"\n'
        ),
        "serving/pkg/apis/autoscaling/register.go": SERVING_GO,
        "strimzi/io/strimzi/api/ResourceLabels.java": STRIMZI_JAVA,
        "flink-operator/org/apache/flink/kubernetes/operator/api/CrdConstants.java": FLINK_JAVA,
    }
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "areas.json").write_text(
        json.dumps(
            {
                "kafka-broker": {"lang": "go", "module": KB, "version": "v0.50.1"},
                "eventing": {"lang": "go", "module": "knative.dev/eventing", "version": "v"},
                "serving": {"lang": "go", "module": "knative.dev/serving", "version": "v"},
                "strimzi": {"lang": "java", "artifact": "io.strimzi:api:0.46.1"},
                "flink-operator": {"lang": "java", "artifact": "x:y:1"},
            }
        )
    )
    return tmp_path


def test_go_constants_resolve_concatenation_within_and_across_packages(sources):
    consts = {c.name: c for c in go_constants(sources / "kafka-broker", "kafka-broker", KB)}
    assert consts["AutoscalingClassAnnotation"].value == "autoscaling.eventing.knative.dev/class"
    assert consts["Shadow"].value == "autoscaling.eventing.knative.dev/x"  # via the import
    assert consts["Ordered"].type == "DeliveryOrdering"
    assert "DefaultLagThreshold" not in consts  # not a string


def test_java_constants_resolve_concatenation(sources):
    consts = {c.name: c.value for c in java_constants(sources / "strimzi", "strimzi")}
    assert consts["STRIMZI_CLUSTER_LABEL"] == "strimzi.io/cluster"


def test_catalogue_knows_keys_not_versions_or_prose(sources):
    cat = Catalogue.load(sources)
    assert "autoscaling.eventing.knative.dev/lag-threshold" in cat.keys
    assert "strimzi.io/cluster" in cat.keys
    assert "target.session" in cat.keys  # an unprefixed LABEL_ constant of the Flink operator
    assert "sources.knative.dev/v1" not in cat.keys
    assert "hello world" not in cat.keys and not is_key("hello world")
    assert cat.config_keys["config-kafka-features"] == {
        "controller-autoscaler-keda",
        "brokers-topic-template",
    }
    assert cat.config_keys["config-kafka-autoscaler"] == {
        "class",
        "min-scale",
        "max-scale",
        "lag-threshold",
    }


def test_missing_sources_name_the_setup_step(tmp_path):
    with pytest.raises(FileNotFoundError, match="make setup"):
        Catalogue.load(tmp_path)


OLD_ANNOTATIONS = {
    "autoscaling.knative.dev/class": "keda.autoscaling.knative.dev",
    "autoscaling.knative.dev/min-scale": "0",
    "keda.autoscaling.knative.dev/kafkaLagThreshold": "50",
}


def _source(annotations, **spec):
    return {
        "apiVersion": "sources.knative.dev/v1",
        "kind": "KafkaSource",
        "metadata": {"name": "s", "annotations": annotations},
        "spec": {"ordering": "ordered", "delivery": {"backoffPolicy": "exponential"}, **spec},
    }


def test_keys_of_another_controller_fail_with_the_key_the_scaler_reads(sources):
    """The archived controller's keys are declared upstream (KafkaSource defaulting writes
    them) but the autoscaler that scales a KafkaSource does not read them."""
    cat = Catalogue.load(sources)
    errors = check_document(_source(OLD_ANNOTATIONS), "eventing/31-x.yaml", cat)
    got = {e.key: e for e in errors}
    assert set(got) == set(OLD_ANNOTATIONS)
    assert all(e.file == "eventing/31-x.yaml" for e in errors)
    assert "closest key it reads: autoscaling.eventing.knative.dev/class" in str(
        got["autoscaling.knative.dev/class"]
    )
    assert got["keda.autoscaling.knative.dev/kafkaLagThreshold"].message.endswith(
        "autoscaling.eventing.knative.dev/lag-threshold"
    )


def test_keys_the_scaler_reads_pass_and_values_are_checked(sources):
    cat = Catalogue.load(sources)
    good = {
        "autoscaling.eventing.knative.dev/class": "keda.autoscaling.knative.dev",
        "autoscaling.eventing.knative.dev/min-scale": "0",
        "autoscaling.eventing.knative.dev/lag-threshold": "50",
    }
    assert check_document(_source(good), "f.yaml", cat) == []
    bad = {
        **good,
        "autoscaling.eventing.knative.dev/class": "keda",
        "autoscaling.eventing.knative.dev/min-scale": "none",
    }
    msgs = {e.key: e.message for e in check_document(_source(bad), "f.yaml", cat)}
    assert "keda.autoscaling.knative.dev" in msgs["autoscaling.eventing.knative.dev/class"]
    assert "not an integer" in msgs["autoscaling.eventing.knative.dev/min-scale"]
    doc = _source(good, ordering="fifo", delivery={"backoffPolicy": "exp"})
    msgs = {e.where: e.message for e in check_document(doc, "f.yaml", cat)}
    assert "ordered, unordered" in msgs["spec.ordering"]
    assert "exponential, linear" in msgs["spec.delivery.backoffPolicy"]


def test_unknown_key_names_file_key_and_closest_known_key(sources):
    cat = Catalogue.load(sources)
    doc = {
        "kind": "KafkaTopic",
        "metadata": {"name": "t", "labels": {"strimzi.io/clutser": "driftloop"}},
    }
    (err,) = check_document(doc, "infra/k8s/base/20-x.yaml", cat)
    assert (err.file, err.where, err.key) == (
        "infra/k8s/base/20-x.yaml",
        "metadata.labels",
        "strimzi.io/clutser",
    )
    assert "closest known key: strimzi.io/cluster" in err.message


def test_own_keys_are_declared_once_and_pass(sources):
    cat = Catalogue.load(sources)
    assert all(k.startswith("driftloop.io/") or "/" not in k for k in OWN_KEYS)
    doc = {"kind": "Model", "metadata": {"name": "m", "labels": {"driftloop.io/model": "d"}}}
    assert check_document(doc, "seldon/k8s/core/models.yaml", cat) == []
    doc["metadata"]["labels"] = {"driftloop.io/modle": "d"}
    (err,) = check_document(doc, "seldon/k8s/core/models.yaml", cat)
    assert "driftloop.io/model" in err.message


def test_extraction_covers_pod_templates_selectors_kustomizations_and_func_yaml():
    deployment = {
        "kind": "Deployment",
        "metadata": {"labels": {"a.io/x": "1"}},
        "spec": {
            "selector": {
                "matchLabels": {"a.io/y": "1"},
                "matchExpressions": [{"key": "a.io/z", "operator": "Exists"}],
            },
            "template": {"metadata": {"annotations": {"a.io/w": "1"}}},
        },
    }
    assert {f.key for f in manifest_keys(deployment, "d.yaml")} == {
        "a.io/x",
        "a.io/y",
        "a.io/z",
        "a.io/w",
    }
    rule = {"kind": "PrometheusRule", "spec": {"groups": [{"rules": [{"labels": {"sev": "x"}}]}]}}
    assert list(manifest_keys(rule, "r.yaml")) == []  # alert labels are not object labels
    service = {"kind": "Service", "metadata": {}, "spec": {"selector": {"a.io/s": "1"}}}
    assert [f.key for f in manifest_keys(service, "s.yaml")] == ["a.io/s"]
    kustomization = {"kind": "Kustomization", "labels": [{"pairs": {"a.io/p": "1"}}]}
    assert [f.key for f in manifest_keys(kustomization, "kustomization.yaml")] == ["a.io/p"]
    func = {"deploy": {"annotations": {"a.io/f": "1"}, "labels": [{"key": "a.io/g", "value": "1"}]}}
    assert [f.key for f in func_yaml_keys(func, "func.yaml")] == ["a.io/f", "a.io/g"]


def test_func_yaml_scaling_keys_and_metric_follow_serving(sources):
    cat = Catalogue.load(sources)
    ok = {
        "deploy": {
            "annotations": {"autoscaling.knative.dev/min-scale": "1"},
            "options": {"scale": {"metric": "concurrency"}},
        }
    }
    assert check_document(ok, "functions/x/func.yaml", cat) == []
    bad = {
        "deploy": {
            "annotations": {"autoscaling.eventing.knative.dev/min-scale": "1"},
            "options": {"scale": {"metric": "latency"}},
        }
    }
    errs = {e.where: e.message for e in check_document(bad, "functions/x/func.yaml", cat)}
    assert "Knative Serving autoscaler" in errs["deploy.annotations"]
    assert "concurrency, cpu, memory, rps" in errs["deploy.options.scale.metric"]


def test_kafka_config_maps_take_only_keys_and_values_the_controller_reads(sources):
    cat = Catalogue.load(sources)
    features = {
        "kind": "ConfigMap",
        "metadata": {"name": "config-kafka-features"},
        "data": {"controller-autoscaler-keda": "enabled", "_example": "x"},
    }
    assert check_document(features, "f.yaml", cat) == []
    features["data"] = {"controller-autoscaler-kdea": "on"}
    msgs = [e.message for e in check_document(features, "f.yaml", cat)]
    assert any("closest known key: controller-autoscaler-keda" in m for m in msgs)
    assert any("Allowed, Disabled, Enabled" in m for m in msgs)
    autoscaler = {
        "kind": "ConfigMap",
        "metadata": {"name": "config-kafka-autoscaler"},
        "data": {"class": "keda.autoscaling.knative.dev", "lag-threshold": "lots"},
    }
    (err,) = check_document(autoscaler, "a.yaml", cat)
    assert err.key == "lag-threshold" and "not an integer" in err.message


def test_own_keys_are_spelled_only_in_driftloop_annotations():
    """Code that sets a driftloop.io label imports its constant: one place declares the keys."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    found = []
    for top in ("driftloop", "functions", "seldon", "flink"):
        for path in (root / top).rglob("*.py"):
            if path.parent.name == "annotations" and path.parent.parent.name == "driftloop":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and str(node.value).startswith("driftloop.io/"):
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {node.value}")
    assert found == []


KAFKA_SCALER_GO = """package scalers

type offsetResetPolicy string

const (
\tlatest   offsetResetPolicy = "latest"
\tearliest offsetResetPolicy = "earliest"
)

const (
\tlagThresholdMetricName = "lagThreshold"
)

func parse(config *Config) {
\t_ = config.TriggerMetadata["bootstrapServers"]
\t_ = config.TriggerMetadata["offsetResetPolicy"]
\t_ = config.TriggerMetadata[lagThresholdMetricName]
}
"""


def test_keda_trigger_metadata_keys_and_offset_policy_are_the_scalers(sources):
    scaler = sources / "keda" / "pkg" / "scalers" / "kafka_scaler.go"
    scaler.parent.mkdir(parents=True)
    scaler.write_text(KAFKA_SCALER_GO)
    areas = json.loads((sources / "areas.json").read_text())
    areas["keda"] = {"lang": "go", "module": "github.com/kedacore/keda/v2", "version": "v2"}
    (sources / "areas.json").write_text(json.dumps(areas))
    cat = Catalogue.load(sources)
    assert cat.trigger_keys["kafka"] == {"bootstrapServers", "offsetResetPolicy", "lagThreshold"}
    doc = {
        "kind": "ScaledObject",
        "metadata": {"name": "a"},
        "spec": {
            "triggers": [
                {
                    "type": "kafka",
                    "metadata": {"lagTreshold": "5", "offsetResetPolicy": "oldest"},
                }
            ]
        },
    }
    got = {e.key: e.message for e in check_document(doc, "e/60.yaml", cat)}
    assert "closest known key: lagThreshold" in got["lagTreshold"]
    assert "earliest, latest" in got["offsetResetPolicy"]
    doc["spec"]["triggers"][0]["metadata"] = {"lagThreshold": "5", "offsetResetPolicy": "latest"}
    assert check_document(doc, "e/60.yaml", cat) == []
