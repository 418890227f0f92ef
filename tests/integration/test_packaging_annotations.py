"""Every annotation and label key is one the pinned upstream controllers declare (read from the
module sources `make setup` keeps), and scaling is configured with the keys they read."""

from __future__ import annotations

from pathlib import Path

import yaml

from driftloop.annotations import READERS, check_files, default_files
from driftloop.manifests import kustomize_build

ROOT = Path(__file__).resolve().parents[2]
EAUTO = "autoscaling.eventing.knative.dev"

# The KafkaSource annotations of the archived eventing-autoscaler-keda controller.
OLD_ANNOTATIONS = """  annotations:
    autoscaling.knative.dev/class: keda.autoscaling.knative.dev
    autoscaling.knative.dev/min-scale: "0"
    autoscaling.knative.dev/max-scale: "5"
    keda.autoscaling.knative.dev/pollingInterval: "10"
    keda.autoscaling.knative.dev/cooldownPeriod: "120"
    keda.autoscaling.knative.dev/kafkaLagThreshold: "50"
"""


def test_every_manifest_and_func_yaml_uses_declared_keys_and_values(annotation_catalogue):
    files = default_files()
    names = {str(f.relative_to(ROOT)) for f in files}
    assert "eventing/31-kafkasource-drift-check.yaml" in names
    assert "functions/promote/func.yaml" in names
    assert "infra/k8s/knative-eventing/10-configmap-config-kafka-features.yaml" in names
    errors = check_files(files, annotation_catalogue)
    assert errors == [], "\n".join(map(str, errors))


def test_the_archived_controllers_keys_fail_naming_file_key_and_the_key_read(
    annotation_catalogue, tmp_path
):
    src = ROOT / "eventing/31-kafkasource-drift-check.yaml"
    text = src.read_text()
    start = text.index("  annotations:\n")
    end = text.index("spec:\n")
    bad = tmp_path / "eventing" / src.name
    bad.parent.mkdir()
    bad.write_text(text[:start] + OLD_ANNOTATIONS + text[end:])
    errors = check_files([bad], annotation_catalogue, root=tmp_path)
    got = {e.key: e for e in errors}
    assert set(got) == {
        "autoscaling.knative.dev/class",
        "autoscaling.knative.dev/min-scale",
        "autoscaling.knative.dev/max-scale",
        "keda.autoscaling.knative.dev/pollingInterval",
        "keda.autoscaling.knative.dev/cooldownPeriod",
        "keda.autoscaling.knative.dev/kafkaLagThreshold",
    }
    assert {e.file for e in errors} == {f"eventing/{src.name}"}
    hints = {k: str(e).rsplit("closest key it reads: ", 1)[1] for k, e in got.items()}
    assert hints["keda.autoscaling.knative.dev/pollingInterval"] == f"{EAUTO}/polling-interval"
    assert hints["keda.autoscaling.knative.dev/cooldownPeriod"] == f"{EAUTO}/cooldown-period"
    assert hints["autoscaling.knative.dev/min-scale"] == f"{EAUTO}/min-scale"


def test_the_pinned_kafka_autoscaler_declares_the_keys_the_sources_use(annotation_catalogue):
    cat = annotation_catalogue
    reads = cat.read_by(READERS["KafkaSource"])
    for k in (
        "class",
        "min-scale",
        "max-scale",
        "polling-interval",
        "cooldown-period",
        "lag-threshold",
        "activation-lag-threshold",
    ):
        assert f"{EAUTO}/{k}" in reads, k
        assert cat.keys[f"{EAUTO}/{k}"].file == "control-plane/pkg/autoscaler/autoscaler_api.go"
    assert "controller-autoscaler-keda" in cat.config_keys["config-kafka-features"]
    # NetworkPolicy and func.yaml visibility labels come from knative.dev/networking.
    assert "networking" in {c.area for c in cat.declaring("networking.knative.dev/visibility")}


def test_sources_and_triggers_scale_from_zero_with_the_kafka_autoscaler(annotation_catalogue):
    keda_class = next(
        c.value
        for c in annotation_catalogue.constants
        if c.name == "AutoscalerClass" and c.package == "control-plane/pkg/autoscaler/keda"
    )
    docs = [
        d
        for p in sorted((ROOT / "eventing").glob("[0-9]*.yaml"))
        for d in yaml.safe_load_all(p.read_text())
        if d
    ]
    scaled = [d for d in docs if d["kind"] in {"KafkaSource", "Trigger"}]
    assert {d["kind"] for d in scaled} == {"KafkaSource", "Trigger"}
    for d in scaled:
        ann = d["metadata"]["annotations"]
        assert ann[f"{EAUTO}/class"] == keda_class, d["metadata"]["name"]
        assert ann[f"{EAUTO}/min-scale"] == "0"
        assert int(ann[f"{EAUTO}/max-scale"]) >= 1 and int(ann[f"{EAUTO}/lag-threshold"]) > 0
        assert not [k for k in ann if k.startswith(("autoscaling.knative.dev/", "keda."))]
    for d in docs:
        if d["kind"] == "Trigger":
            assert d["metadata"]["annotations"]["kafka.eventing.knative.dev/delivery.order"] == (
                "ordered"
            )


def test_overlays_enable_the_kafka_autoscaler_in_knative_eventing(manifest_tools):
    for overlay in ("dev", "prod"):
        rendered = kustomize_build(ROOT / "infra/k8s/overlays" / overlay, manifest_tools.kustomize)
        docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(rendered) if d}
        features = docs[("ConfigMap", "config-kafka-features")]
        assert features["metadata"]["namespace"] == "knative-eventing"
        assert features["data"]["controller-autoscaler-keda"] == "enabled"
        defaults = docs[("ConfigMap", "config-kafka-autoscaler")]
        assert defaults["metadata"]["namespace"] == "knative-eventing"
        assert defaults["data"]["class"] == "keda.autoscaling.knative.dev"
        # everything else stays in driftloop's namespace
        assert docs[("KafkaSource", "drift-check")]["metadata"]["namespace"] == "driftloop"


def test_local_dispatcher_defaults_are_the_pinned_autoscalers(annotation_catalogue):
    """driftloop.local.scaling falls back to the defaults autoscaler_api.go declares."""
    import re

    from driftloop.local import scaling
    from driftloop.settings import Settings

    api = (
        Settings().cache_dir
        / "schemas/annotations/kafka-broker/control-plane/pkg/autoscaler/autoscaler_api.go"
    ).read_text()
    upstream = {m[0]: int(m[1]) for m in re.findall(r"\b(Default\w+)\s*=\s*(\d+)", api)}
    assert upstream == {
        "DefaultPollingInterval": scaling.DEFAULTS[scaling.POLLING_INTERVAL],
        "DefaultCooldownPeriod": scaling.DEFAULTS[scaling.COOLDOWN_PERIOD],
        "DefaultMinReplicaCount": scaling.DEFAULTS[scaling.MIN_SCALE],
        "DefaultMaxReplicaCount": scaling.DEFAULTS[scaling.MAX_SCALE],
        "DefaultLagThreshold": scaling.DEFAULTS[scaling.LAG_THRESHOLD],
    }
    keda = annotation_catalogue.declaring(scaling.CLASS)
    assert keda and scaling.KEDA_CLASS in {
        c.value for c in annotation_catalogue.constants if c.name == "AutoscalerClass"
    }


def test_manifests_the_code_renders_use_declared_keys(annotation_catalogue, tmp_path):
    """The training Job and the Seldon Experiment are built in Python: checked the same way."""
    from driftloop.annotations import check_document
    from driftloop.promotion.routing import Routing, experiment_manifest
    from driftloop.retrain.backends import TrainingRequest, render_job
    from driftloop.settings import Settings

    job = render_job(Settings(state_dir=tmp_path), TrainingRequest("digits", "r1", {}))
    routing = Routing("digits", champion="1", weights={"1": 0.9, "2": 0.1})
    experiment = experiment_manifest("digits", routing)
    for doc in (job, experiment):
        assert check_document(doc, f"<rendered {doc['kind']}>", annotation_catalogue) == []
