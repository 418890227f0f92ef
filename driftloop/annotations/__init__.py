"""Annotation and label keys, checked against the constants the pinned upstream code declares.

Annotations are how Knative, eventing-kafka-broker and KEDA are told to scale, and a key a
controller does not read is silently ignored: the schemas cannot catch it (annotations are a
free string map). So every annotation and label key in the manifests and func.yaml files is
looked up in the string constants of the pinned upstream sources (Go modules from the module
proxy, Java sources jars from Maven Central) that ``make setup`` keeps in
``.cache/schemas/annotations`` (infra/setup/70-schemas.sh). Keys of our own are declared
in ``keys.OWN_KEYS`` and nowhere else. Values with a fixed vocabulary (autoscaling class,
metric, delivery ordering, backoff policy, feature flags) are checked against the constants
that define them.
"""

from __future__ import annotations

from driftloop.annotations.check import (
    Found,
    check_document,
    check_files,
    default_files,
    func_yaml_keys,
    load_yaml_documents,
    manifest_keys,
)
from driftloop.annotations.keys import (
    MODEL_LABEL,
    OWN_KEYS,
    RUN_ID_LABEL,
    VERSION_LABEL,
    WELL_KNOWN,
)
from driftloop.annotations.upstream import (
    AnnotationError,
    AnnotationSourcesMissing,
    Constant,
    go_constants,
    is_key,
    java_constants,
)
from driftloop.annotations.vocabulary import READERS, Catalogue, Reader, Vocabulary

__all__ = [
    "MODEL_LABEL",
    "OWN_KEYS",
    "READERS",
    "RUN_ID_LABEL",
    "VERSION_LABEL",
    "WELL_KNOWN",
    "AnnotationError",
    "AnnotationSourcesMissing",
    "Catalogue",
    "Constant",
    "Found",
    "Reader",
    "Vocabulary",
    "check_document",
    "check_files",
    "default_files",
    "func_yaml_keys",
    "go_constants",
    "is_key",
    "java_constants",
    "load_yaml_documents",
    "manifest_keys",
]
