"""driftloop's own label and annotation keys, and the shape every key must have."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SOURCES = ROOT / ".cache" / "schemas" / "annotations"

MODEL_LABEL = "driftloop.io/model"
VERSION_LABEL = "driftloop.io/version"
RUN_ID_LABEL = "driftloop.io/run-id"

OWN_KEYS: Mapping[str, str] = {
    MODEL_LABEL: "label: the model a Seldon Model, Experiment, InferenceService or "
    "training Job is for",
    VERSION_LABEL: "label: the model version a Seldon Model serves",
    RUN_ID_LABEL: "label: the retrain run a training Job executes",
    "release": "label the Prometheus of kube-prometheus-stack selects monitors and rules by",
    "alertmanagerConfig": "label the Alertmanager selects AlertmanagerConfigs by",
    "type": "label Seldon Core v2 puts on its server pods (PodMonitor selector)",
    "driftloop.io/lib-jars": "annotation: the jars the Flink image adds to /opt/flink/lib "
    "(tests/unit/test_flink_manifests.py holds them equal to the local session cluster's)",
    "driftloop.io/plugins": "annotation: the plugin folders of the Flink image's "
    "/opt/flink/plugins (held equal to the local session cluster's likewise)",
}
"""Keys driftloop chooses itself (``driftloop.io/…``, or unprefixed selector labels)."""

WELL_KNOWN: Mapping[str, str] = {
    f"app.kubernetes.io/{name}": "Kubernetes recommended label (kubernetes.io, 'Recommended "
    "Labels'); part-of and component are declared as constants by no pinned module"
    for name in ("name", "instance", "version", "component", "part-of", "managed-by")
}
"""Keys Kubernetes documents but no pinned module declares as a constant."""

KEY_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+/")
KEY_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
API_VERSION = re.compile(r"^v\d+((alpha|beta)\d+)?$")
KEYISH_CONST = re.compile(r"label|annotation|anno_", re.IGNORECASE)
