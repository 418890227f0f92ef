"""Annotation and label keys, checked against the constants the pinned upstream code declares.

Annotations are how Knative, eventing-kafka-broker and KEDA are told to scale, and a key a
controller does not read is silently ignored: the schemas cannot catch it (annotations are a
free string map). So every annotation and label key in the manifests and func.yaml files is
looked up in the string constants of the pinned upstream sources (Go modules from the module
proxy, Java sources jars from Maven Central) that ``make setup`` keeps in
``.cache/schemas/annotations`` (infra/setup/70-schemas.sh). Keys of our own are declared
here, in ``OWN_KEYS``, and nowhere else. Values with a fixed vocabulary (autoscaling class,
metric, delivery ordering, backoff policy, feature flags) are checked against the constants
that define them.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
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
_VERSION = re.compile(r"^v\d+((alpha|beta)\d+)?$")
_KEYISH_CONST = re.compile(r"label|annotation|anno_", re.IGNORECASE)


class AnnotationSourcesMissing(FileNotFoundError):
    """The upstream sources were not fetched (``make setup``)."""


@dataclass(frozen=True)
class Constant:
    """One string constant of an upstream package."""

    area: str
    package: str
    """Package directory relative to the module root (Go) or the Java class name."""
    name: str
    value: str
    type: str = ""
    file: str = ""


@dataclass(frozen=True)
class AnnotationError:
    """An annotation/label key or value no pinned controller knows."""

    file: str
    where: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: {self.key}: {self.message}"


# --------------------------------------------------------------------------- Go / Java constants

_GO_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"|`([^`]*)`')
_GO_IMPORT = re.compile(r'^\s*(?:([A-Za-z_]\w*|\.)\s+)?"([^"]+)"\s*$')
_GO_SPEC = re.compile(r"^\s*([A-Za-z_]\w*)(?:\s+([A-Za-z_][\w.]*))?\s*=\s*(.+?)\s*$")


def _strip_go_comment(line: str) -> str:
    out, quote = [], ""
    i = 0
    while i < len(line):
        c = line[i]
        if quote:
            out.append(c)
            if c == "\\" and quote == '"' and i + 1 < len(line):
                out.append(line[i + 1])
                i += 1
            elif c == quote:
                quote = ""
        elif c in '"`':
            quote = c
            out.append(c)
        elif line.startswith("//", i):
            break
        else:
            out.append(c)
        i += 1
    return "".join(out)


@dataclass
class _GoFile:
    package: str
    imports: dict[str, str] = field(default_factory=dict)
    specs: list[tuple[str, str, str]] = field(default_factory=list)
    """(name, type, expression) of every const spec with an explicit value."""


def parse_go(text: str) -> _GoFile:
    """The package name, imports and ``const`` specs of a Go file (and ``var`` blocks, whose
    string expressions are constants in all but name)."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)
    lines = [_strip_go_comment(raw) for raw in text.splitlines()]
    package, imports = "", {}
    specs: list[tuple[str, str, str]] = []
    block = ""
    for line in lines:
        s = line.strip()
        if not s:
            continue
        if block:
            if s == ")":
                block = ""
                continue
            if block == "import":
                m = _GO_IMPORT.match(s)
                if m:
                    path = m.group(2)
                    imports[m.group(1) or path.rsplit("/", 1)[-1]] = path
            elif block in {"const", "var"}:
                m = _GO_SPEC.match(s)
                if m:
                    specs.append((m.group(1), m.group(2) or "", m.group(3)))
            continue
        if s.startswith("package "):
            package = s.split()[1]
        elif s in {"import (", "const (", "var ("}:
            block = s.split()[0]
        elif s.startswith("import "):
            m = _GO_IMPORT.match(s[len("import ") :])
            if m:
                imports[m.group(1) or m.group(2).rsplit("/", 1)[-1]] = m.group(2)
        elif s.startswith("const "):
            m = _GO_SPEC.match(s[len("const ") :])
            if m:
                specs.append((m.group(1), m.group(2) or "", m.group(3)))
    return _GoFile(package, imports, specs)


def _split_plus(expr: str) -> list[str] | None:
    """``A + "x" + b.C`` → terms; None for anything else (calls, arithmetic, iota)."""
    terms, buf, quote = [], "", ""
    for c in expr:
        if quote:
            buf += c
            if c == quote and not buf.endswith("\\" + quote):
                quote = ""
        elif c in '"`':
            quote = c
            buf += c
        elif c == "+":
            terms.append(buf.strip())
            buf = ""
        else:
            buf += c
    terms.append(buf.strip())
    ok = all(_GO_STRING.fullmatch(t) or re.fullmatch(r"[A-Za-z_][\w.]*", t) for t in terms)
    return terms if ok and terms else None


def _literal(term: str) -> str | None:
    m = _GO_STRING.fullmatch(term)
    if not m:
        return None
    if m.group(2) is not None:
        return m.group(2)
    return bytes(m.group(1), "utf-8").decode("unicode_escape")


def go_constants(root: Path, area: str, module: str) -> list[Constant]:
    """Every string constant of the Go packages kept under ``root`` (cross-package refs resolved
    through the files' imports when the imported package was kept too)."""
    files: dict[str, list[tuple[Path, _GoFile]]] = {}
    for path in sorted(root.rglob("*.go")):
        if path.name.endswith("_test.go"):
            continue
        pkg_dir = str(path.parent.relative_to(root))
        files.setdefault(pkg_dir, []).append((path, parse_go(path.read_text(errors="replace"))))
    exprs: dict[tuple[str, str], tuple[str, str, _GoFile, Path]] = {}
    for pkg_dir, parsed in files.items():
        for path, gf in parsed:
            for name, typ, expr in gf.specs:
                exprs[(pkg_dir, name)] = (expr, typ, gf, path)
    values: dict[tuple[str, str], str | None] = {}

    def resolve(key: tuple[str, str], depth: int = 0) -> str | None:
        if key in values:
            return values[key]
        values[key] = None  # cycles and failures resolve to None
        if key not in exprs or depth > 20:
            return None
        expr, _typ, gf, _path = exprs[key]
        terms = _split_plus(expr)
        if terms is None:
            return None
        out = ""
        for t in terms:
            lit = _literal(t)
            if lit is None:
                if "." in t:
                    alias, _, name = t.partition(".")
                    imp = gf.imports.get(alias, "")
                    if not imp.startswith(module + "/"):
                        return None
                    lit = resolve((imp[len(module) + 1 :], name), depth + 1)
                else:
                    lit = resolve((key[0], t), depth + 1)
                if lit is None:
                    return None
            out += lit
        values[key] = out
        return out

    consts = []
    for (pkg_dir, name), (_expr, typ, _gf, path) in sorted(exprs.items()):
        value = resolve((pkg_dir, name))
        if value is not None:
            rel = str(path.relative_to(root))
            consts.append(Constant(area, pkg_dir, name, value, typ, rel))
    return consts


_JAVA_CONST = re.compile(r"static\s+final\s+String\s+(\w+)\s*=\s*([^;]+);")


def java_constants(root: Path, area: str) -> list[Constant]:
    """``static final String`` constants of the Java sources kept under ``root``."""
    exprs: dict[str, tuple[str, Path]] = {}
    for path in sorted(root.rglob("*.java")):
        text = re.sub(r"/\*.*?\*/|//[^\n]*", "", path.read_text(errors="replace"), flags=re.S)
        for m in _JAVA_CONST.finditer(text):
            exprs.setdefault(m.group(1), (" ".join(m.group(2).split()), path))
    values: dict[str, str | None] = {}

    def resolve(name: str, depth: int = 0) -> str | None:
        if name in values:
            return values[name]
        values[name] = None
        if name not in exprs or depth > 20:
            return None
        terms = _split_plus(exprs[name][0].replace("'", '"'))
        if terms is None:
            return None
        out = ""
        for t in terms:
            lit = _literal(t)
            if lit is None:
                lit = resolve(t.rsplit(".", 1)[-1], depth + 1)
            if lit is None:
                return None
            out += lit
        values[name] = out
        return out

    out = []
    for name, (_expr, path) in sorted(exprs.items()):
        value = resolve(name)
        if value is not None:
            rel = str(path.relative_to(root))
            out.append(Constant(area, rel.removesuffix(".java"), name, value, "String", rel))
    return out


def is_key(value: str) -> bool:
    """A Kubernetes annotation/label key: optional DNS prefix + ``/`` + name."""
    prefix, _, name = value.rpartition("/")
    if prefix and not KEY_PREFIX.match(prefix + "/"):
        return False
    return bool(KEY_NAME.match(name)) and len(name) <= 63


def _declares_key(c: Constant) -> bool:
    """A constant that names an annotation/label key (not an API group/version or a URL)."""
    if not is_key(c.value):
        return False
    if "/" in c.value:
        return not _VERSION.match(c.value.rpartition("/")[2])
    return bool(_KEYISH_CONST.search(c.name))


# --------------------------------------------------------------------------- upstream catalogue


@dataclass(frozen=True)
class Vocabulary:
    """Allowed values of one key or field, taken from upstream constants."""

    where: str
    constants: tuple[tuple[str, str, str], ...] = ()
    """(area, package directory, constant name) of each allowed value."""
    type: tuple[str, str, str] | None = None
    """(area, package directory, Go type): every constant of that type is allowed."""
    casefold: bool = False
    integer: bool = False
    """Values must be integers (the controller parses them with strconv)."""


_KB = "kafka-broker"
_AUTOSCALER = "control-plane/pkg/autoscaler"
_EAUTO = "autoscaling.eventing.knative.dev"
_INT = Vocabulary("integer", integer=True)

VOCABULARIES: Mapping[str, Vocabulary] = {
    f"{_EAUTO}/class": Vocabulary(
        "eventing-kafka-broker autoscaler class",
        constants=(
            (_KB, f"{_AUTOSCALER}/keda", "AutoscalerClass"),
            (_KB, _AUTOSCALER, "AutoscalingClassDisabledAnnotationValue"),
        ),
    ),
    **{
        f"{_EAUTO}/{k}": _INT
        for k in (
            "min-scale",
            "max-scale",
            "polling-interval",
            "cooldown-period",
            "lag-threshold",
            "activation-lag-threshold",
        )
    },
    "autoscaling.knative.dev/class": Vocabulary(
        "Knative Serving autoscaler class",
        constants=(
            ("serving", "pkg/apis/autoscaling", "KPA"),
            ("serving", "pkg/apis/autoscaling", "HPA"),
        ),
    ),
    "autoscaling.knative.dev/metric": Vocabulary(
        "Knative Serving autoscaling metric",
        constants=tuple(
            ("serving", "pkg/apis/autoscaling", n) for n in ("Concurrency", "RPS", "CPU", "Memory")
        ),
    ),
    "autoscaling.knative.dev/min-scale": _INT,
    "autoscaling.knative.dev/max-scale": _INT,
    "kafka.eventing.knative.dev/delivery.order": Vocabulary(
        "Kafka broker trigger delivery ordering",
        type=(_KB, "control-plane/pkg/apis/sources/v1", "DeliveryOrdering"),
    ),
    "eventing.knative.dev/broker.class": Vocabulary(
        "broker class",
        constants=(
            (_KB, "control-plane/pkg/kafka", "BrokerClass"),
            (_KB, "control-plane/pkg/kafka", "NamespacedBrokerClass"),
            ("eventing", "pkg/apis/eventing", "MTChannelBrokerClassValue"),
        ),
    ),
}
"""Annotation key → the upstream constants its values must be one of."""

FIELD_VOCABULARIES: Mapping[str, Vocabulary] = {
    "KafkaSource spec.ordering": Vocabulary(
        "KafkaSource delivery ordering",
        type=(_KB, "control-plane/pkg/apis/sources/v1", "DeliveryOrdering"),
    ),
    "delivery.backoffPolicy": Vocabulary(
        "delivery backoff policy", type=("eventing", "pkg/apis/duck/v1", "BackoffPolicyType")
    ),
    "func.yaml deploy.options.scale.metric": VOCABULARIES["autoscaling.knative.dev/metric"],
    "KEDA kafka trigger offsetResetPolicy": Vocabulary(
        "KEDA Kafka scaler offset reset policy",
        type=("keda", "pkg/scalers", "offsetResetPolicy"),
    ),
    "config-kafka-features flag": Vocabulary(
        "eventing feature flag",
        constants=tuple(
            ("eventing", "pkg/apis/feature", n) for n in ("Enabled", "Allowed", "Disabled")
        ),
        casefold=True,
    ),
}
"""Spec fields (and ConfigMap entries) with a fixed vocabulary."""


@dataclass(frozen=True)
class Reader:
    """The controller that scales a kind: the keys under ``prefixes`` that it does not read
    are errors, however well-known elsewhere (an autoscaling key of another controller is
    silently ignored)."""

    what: str
    packages: tuple[tuple[str, str], ...]
    prefixes: tuple[str, ...] = (
        "autoscaling.knative.dev/",
        "keda.autoscaling.knative.dev/",
        f"{_EAUTO}/",
        "autoscaling.keda.sh/",
    )


_KAFKA_AUTOSCALER = Reader(
    "the eventing-kafka-broker KEDA autoscaler", ((_KB, _AUTOSCALER), (_KB, f"{_AUTOSCALER}/keda"))
)
_SERVING_AUTOSCALER = Reader(
    "the Knative Serving autoscaler", (("serving", "pkg/apis/autoscaling"),)
)
READERS: Mapping[str, Reader] = {
    "KafkaSource": _KAFKA_AUTOSCALER,
    "Trigger": _KAFKA_AUTOSCALER,
    "Subscription": _KAFKA_AUTOSCALER,
    "Service": _SERVING_AUTOSCALER,
    "func.yaml": _SERVING_AUTOSCALER,
}
"""Kind → the controller that reads its scaling annotations (KafkaSources, Kafka-broker
Triggers and KafkaChannel Subscriptions become KEDA-scaled ConsumerGroups; Knative Services
and functions scale through Serving)."""


class Catalogue:
    """The keys and constants of the pinned upstream sources."""

    def __init__(
        self,
        constants: Iterable[Constant],
        config_keys: Mapping[str, set[str]],
        trigger_keys: Mapping[str, set[str]] | None = None,
    ) -> None:
        self.constants = list(constants)
        self.config_keys = {k: set(v) for k, v in config_keys.items()}
        """ConfigMap name → data keys its controller reads."""
        self.trigger_keys = {k: set(v) for k, v in (trigger_keys or {}).items()}
        """KEDA trigger type → the metadata keys its scaler reads."""
        self.keys: dict[str, Constant] = {}
        for c in self.constants:
            if _declares_key(c):
                self.keys.setdefault(c.value, c)
        self._by_name = {(c.area, c.package, c.name): c for c in self.constants}

    @classmethod
    def load(cls, sources: Path = DEFAULT_SOURCES) -> Catalogue:
        """Constants of every area listed in ``sources/areas.json`` (written by setup)."""
        manifest = sources / "areas.json"
        if not manifest.exists():
            raise AnnotationSourcesMissing(
                f"{manifest} missing: run `make setup` (infra/setup/70-schemas.sh)"
            )
        areas = json.loads(manifest.read_text())
        consts: list[Constant] = []
        for area, meta in sorted(areas.items()):
            root = sources / area
            if meta.get("lang") == "java":
                consts += java_constants(root, area)
            else:
                consts += go_constants(root, area, str(meta["module"]))
        return cls(consts, _config_keys(sources), _trigger_keys(sources, consts))

    def allowed(self, vocab: Vocabulary) -> set[str]:
        out = set()
        for ref in vocab.constants:
            c = self._by_name.get(ref)
            if c is None:
                raise LookupError(f"upstream constant {'/'.join(ref)} not found in the sources")
            out.add(c.value)
        if vocab.type is not None:
            area, pkg, typ = vocab.type
            found = {c.value for c in self.constants if (c.area, c.package, c.type) == vocab.type}
            if not found:
                raise LookupError(f"no constants of type {typ} in {area}/{pkg}")
            out |= found
        return out

    def read_by(self, reader: Reader) -> set[str]:
        """The keys declared by the reader's packages."""
        return {
            c.value
            for c in self.constants
            if (c.area, c.package) in reader.packages and _declares_key(c) and "/" in c.value
        }

    def declaring(self, key: str) -> list[Constant]:
        """Every upstream constant that declares ``key``."""
        return [c for c in self.constants if c.value == key and _declares_key(c)]

    def known(self, key: str) -> bool:
        return key in self.keys or key in OWN_KEYS or key in WELL_KNOWN

    def closest(self, key: str) -> str | None:
        pool = [*self.keys, *OWN_KEYS, *WELL_KNOWN]
        best = difflib.get_close_matches(key, pool, n=1, cutoff=0.0)
        return best[0] if best else None

    def origin(self, key: str) -> str:
        c = self.keys.get(key)
        if c is not None:
            return f"{c.area} {c.file} {c.name}"
        return "driftloop (OWN_KEYS)" if key in OWN_KEYS else "Kubernetes docs (WELL_KNOWN)"


_FLAG_CALL = re.compile(r'as(?:Flag|Template|String|Int\w*|Bool)\("([^"]+)"')


def _config_keys(sources: Path) -> dict[str, set[str]]:
    """Data keys of the eventing-kafka-broker ConfigMaps we set, read from its sources."""
    out: dict[str, set[str]] = {}
    features = sources / _KB / "control-plane/pkg/apis/config/features.go"
    if features.exists():
        out["config-kafka-features"] = set(_FLAG_CALL.findall(features.read_text()))
    auto = sources / _KB / _AUTOSCALER
    if auto.exists():
        prefix = f"{_EAUTO}/"
        out["config-kafka-autoscaler"] = {
            c.value[len(prefix) :]
            for c in go_constants(auto, _KB, "knative.dev/eventing-kafka-broker")
            if c.value.startswith(prefix)
        }
    return out


_TRIGGER_METADATA = re.compile(r'TriggerMetadata\[(?:"([^"]+)"|(\w+))\]')


def _trigger_keys(sources: Path, consts: Iterable[Constant]) -> dict[str, set[str]]:
    """KEDA trigger type → metadata keys its scaler reads (``TriggerMetadata[...]``)."""
    out: dict[str, set[str]] = {}
    scalers = sources / "keda" / "pkg" / "scalers"
    names = {c.name: c.value for c in consts if (c.area, c.package) == ("keda", "pkg/scalers")}
    for path in sorted(scalers.glob("*_scaler.go")):
        keys = set()
        for literal, ident in _TRIGGER_METADATA.findall(path.read_text()):
            key = literal or names.get(ident)
            if key:
                keys.add(key)
        out[path.name.removesuffix("_scaler.go")] = keys
    return out


# --------------------------------------------------------------------------- extraction (pure)


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
                        f"; closest known key: {closest} ({cat.origin(closest)})"
                        if closest
                        else ""
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
            vocab = VOCABULARIES[f"{_EAUTO}/{key}"]
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


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m driftloop.annotations")
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--sources", type=Path, default=None, help="default: the cache's")
    args = parser.parse_args(argv)
    if args.sources is None:
        from driftloop.settings import Settings

        args.sources = Settings().cache_dir / "schemas" / "annotations"
    cat = Catalogue.load(args.sources)
    files = args.files or default_files()
    errors = check_files(files, cat)
    for e in errors:
        print(e)
    print(f"{len(files)} files, {len(cat.keys)} upstream keys, {len(errors)} errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(_main())
