"""Checking manifests and func.yaml files: every key found, looked up in the catalogue."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from driftloop.annotations.keys import ROOT
from driftloop.annotations.upstream import AnnotationError
from driftloop.annotations.vocabulary import (
    EVENTING_AUTOSCALING,
    FIELD_VOCABULARIES,
    READERS,
    VOCABULARIES,
    Catalogue,
    Vocabulary,
)


@dataclass(frozen=True)
class Found:
    """A key (and its value) where a manifest sets or selects it."""

    file: str
    where: str
    key: str
    value: Any


def _meta_keys(obj: Any, path: str, file: str) -> Iterator[Found]:
    """Keys of every ``metadata.labels/annotations`` and label selector inside ``obj``."""
    if isinstance(obj, list):
        for i, item in enumerate(obj):
            yield from _meta_keys(item, f"{path}[{i}]", file)
        return
    if not isinstance(obj, dict):
        return
    for k, v in obj.items():
        here = f"{path}.{k}" if path else str(k)
        if k == "metadata" and isinstance(v, dict):
            for part in ("labels", "annotations"):
                for key, val in (v.get(part) or {}).items():
                    yield Found(file, f"{here}.{part}", str(key), val)
        if k == "matchLabels" and isinstance(v, dict):
            for key, val in v.items():
                yield Found(file, here, str(key), val)
        if k == "matchExpressions" and isinstance(v, list):
            for i, expr in enumerate(v):
                if isinstance(expr, dict) and "key" in expr:
                    yield Found(file, f"{here}[{i}].key", str(expr["key"]), None)
        yield from _meta_keys(v, here, file)


def manifest_keys(doc: Mapping[str, Any], file: str) -> Iterator[Found]:
    """Every annotation/label key a manifest (or a kustomization) sets or selects."""
    kind = doc.get("kind")
    if kind == "Kustomization":
        for i, entry in enumerate(doc.get("labels") or []):
            for key, val in (entry.get("pairs") or {}).items():
                yield Found(file, f"labels[{i}].pairs", str(key), val)
        for part in ("commonLabels", "commonAnnotations"):
            for key, val in (doc.get(part) or {}).items():
                yield Found(file, part, str(key), val)
        return
    yield from _meta_keys(doc, "", file)
    spec = doc.get("spec")
    if kind == "Service" and isinstance(spec, dict) and isinstance(spec.get("selector"), dict):
        for key, val in spec["selector"].items():
            yield Found(file, "spec.selector", str(key), val)


def func_yaml_keys(doc: Mapping[str, Any], file: str) -> Iterator[Found]:
    """Annotation and label keys of a func.yaml (``deploy.annotations`` / ``deploy.labels``)."""
    deploy = doc.get("deploy") or {}
    for key, val in (deploy.get("annotations") or {}).items():
        yield Found(file, "deploy.annotations", str(key), val)
    for i, label in enumerate(deploy.get("labels") or []):
        yield Found(file, f"deploy.labels[{i}]", str(label.get("key")), label.get("value"))


def _field_values(doc: Mapping[str, Any], file: str) -> Iterator[tuple[str, Found]]:
    """(vocabulary name, value) of each spec field with a fixed vocabulary."""
    raw_spec = doc.get("spec")
    spec: Mapping[str, Any] = raw_spec if isinstance(raw_spec, dict) else {}
    if doc.get("kind") == "KafkaSource" and "ordering" in spec:
        yield (
            "KafkaSource spec.ordering",
            Found(file, "spec.ordering", "ordering", spec["ordering"]),
        )
    for where, delivery in _deliveries(spec, "spec"):
        if "backoffPolicy" in delivery:
            yield (
                "delivery.backoffPolicy",
                Found(file, f"{where}.backoffPolicy", "backoffPolicy", delivery["backoffPolicy"]),
            )
    if doc.get("kind") == "ConfigMap":
        name = (doc.get("metadata") or {}).get("name")
        if name == "config-kafka-features":
            for key, val in (doc.get("data") or {}).items():
                if not str(key).startswith("_") and not str(key).endswith("template"):
                    yield "config-kafka-features flag", Found(file, f"data.{key}", str(key), val)


def _deliveries(obj: Any, path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            here = f"{path}.{k}"
            if k == "delivery" and isinstance(v, dict):
                yield here, v
            yield from _deliveries(v, here)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _deliveries(v, f"{path}[{i}]")


# --------------------------------------------------------------------------- checking


def _value_error(vocab: Vocabulary, allowed: set[str], value: Any) -> str | None:
    text = str(value)
    if vocab.integer:
        return None if re.fullmatch(r"-?\d+", text) else f"value {text!r} is not an integer"
    ok = {a.casefold() for a in allowed} if vocab.casefold else allowed
    if (text.casefold() if vocab.casefold else text) in ok:
        return None
    return f"{vocab.where}: value {text!r} is none of {', '.join(sorted(allowed))}"


def check_document(doc: Mapping[str, Any], file: str, cat: Catalogue) -> list[AnnotationError]:
    """Unknown keys (with the closest known one) and out-of-vocabulary values in one document."""
    errors: list[AnnotationError] = []
    is_func = file.endswith("func.yaml")
    keys = func_yaml_keys(doc, file) if is_func else manifest_keys(doc, file)
    reader = READERS.get("func.yaml" if is_func else str(doc.get("kind")))
    for f in keys:
        own = f.where in {"metadata.annotations", "deploy.annotations"}
        if reader is not None and own and f.key.startswith(reader.prefixes):
            reads = cat.read_by(reader)
            if f.key not in reads:
                hint = difflib.get_close_matches(f.key, sorted(reads), n=1, cutoff=0.0)
                errors.append(
                    AnnotationError(
                        f.file,
                        f.where,
                        f.key,
                        f"not among the keys of {reader.what}, which scales a "
                        f"{'function' if is_func else doc.get('kind')}"
                        + (f"; closest key it reads: {hint[0]}" if hint else ""),
                    )
                )
                continue
        if not cat.known(f.key):
            closest = cat.closest(f.key)
            errors.append(
                AnnotationError(
                    f.file,
                    f.where,
                    f.key,
                    "no pinned controller declares this key"
                    + (
                        f"; closest known key: {closest} ({cat.origin(closest)})" if closest else ""
                    ),
                )
            )
            continue
        vocab = VOCABULARIES.get(f.key)
        if vocab is not None and f.where.endswith("annotations") and f.value is not None:
            msg = _value_error(vocab, cat.allowed(vocab), f.value)
            if msg:
                errors.append(AnnotationError(f.file, f.where, f.key, msg))
    for name, f in _field_values(doc, file):
        vocab = FIELD_VOCABULARIES[name]
        msg = _value_error(vocab, cat.allowed(vocab), f.value)
        if msg:
            errors.append(AnnotationError(f.file, f.where, f.key, msg))
    if file.endswith("func.yaml"):
        metric = (((doc.get("deploy") or {}).get("options") or {}).get("scale") or {}).get("metric")
        if metric is not None:
            vocab = FIELD_VOCABULARIES["func.yaml deploy.options.scale.metric"]
            msg = _value_error(vocab, cat.allowed(vocab), metric)
            if msg:
                errors.append(AnnotationError(file, "deploy.options.scale.metric", "metric", msg))
    if doc.get("kind") == "ConfigMap":
        errors += _check_config_map(doc, file, cat)
    if doc.get("kind") in {"ScaledObject", "ScaledJob"}:
        errors += _check_keda_triggers(doc, file, cat)
    return errors


def _check_keda_triggers(
    doc: Mapping[str, Any], file: str, cat: Catalogue
) -> list[AnnotationError]:
    """A KEDA trigger's metadata is a free map too: keys its scaler does not read are ignored."""
    errors = []
    for i, trig in enumerate(((doc.get("spec") or {}).get("triggers")) or []):
        known = cat.trigger_keys.get(str(trig.get("type")))
        if known is None:
            continue  # a scaler whose source is not kept: the schema check still applies
        for key, val in (trig.get("metadata") or {}).items():
            where = f"spec.triggers[{i}].metadata"
            if key not in known:
                hint = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.0)
                errors.append(
                    AnnotationError(
                        file,
                        where,
                        str(key),
                        f"the KEDA {trig.get('type')} scaler reads no such key"
                        + (f"; closest known key: {hint[0]}" if hint else ""),
                    )
                )
            elif key == "offsetResetPolicy" and trig.get("type") == "kafka":
                vocab = FIELD_VOCABULARIES["KEDA kafka trigger offsetResetPolicy"]
                msg = _value_error(vocab, cat.allowed(vocab), val)
                if msg:
                    errors.append(AnnotationError(file, where, str(key), msg))
    return errors


def _check_config_map(doc: Mapping[str, Any], file: str, cat: Catalogue) -> list[AnnotationError]:
    """config-kafka-features / config-kafka-autoscaler: only keys the controller reads."""
    name = str((doc.get("metadata") or {}).get("name"))
    known = cat.config_keys.get(name)
    if known is None:
        return []
    errors = []
    for key, val in (doc.get("data") or {}).items():
        key = str(key)
        if key.startswith("_"):
            continue  # _example: documentation only
        if key not in known:
            hint = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.0)
            errors.append(
                AnnotationError(
                    file,
                    f"ConfigMap/{name} data",
                    key,
                    "the controller reads no such key"
                    + (f"; closest known key: {hint[0]}" if hint else ""),
                )
            )
        elif name == "config-kafka-autoscaler":
            vocab = VOCABULARIES[f"{EVENTING_AUTOSCALING}/{key}"]
            msg = _value_error(vocab, cat.allowed(vocab), val)
            if msg:
                errors.append(AnnotationError(file, f"ConfigMap/{name} data", key, msg))
    return errors


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]


MANIFEST_DIRS = ("eventing", "infra", "seldon", "flink", "driftloop")
"""Where manifests live (driftloop/: templates the code fills in, e.g. the training Job)."""


def default_files(root: Path = ROOT) -> list[Path]:
    """Every Kubernetes manifest and kustomization we ship (a YAML file with a ``kind``), and
    every func.yaml."""
    files: set[Path] = set((root / "functions").glob("*/func.yaml"))
    for top in MANIFEST_DIRS:
        for path in [*(root / top).rglob("*.yaml"), *(root / top).rglob("*.yml")]:
            try:
                docs = load_yaml_documents(path)
            except yaml.YAMLError:
                continue  # not YAML we ship as a manifest (templates and the like)
            if any("kind" in d for d in docs):
                files.add(path)
    return sorted(files)


def check_files(files: Iterable[Path], cat: Catalogue, root: Path = ROOT) -> list[AnnotationError]:
    errors: list[AnnotationError] = []
    for path in files:
        try:
            label = str(path.resolve().relative_to(root))
        except ValueError:
            label = str(path)
        if path.name == "func.yaml":
            label = label if label.endswith("func.yaml") else f"{label}/func.yaml"
        for doc in load_yaml_documents(path):
            errors += check_document(doc, label, cat)
    return errors
