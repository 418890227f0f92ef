"""What the pinned controllers read: key vocabularies, the readers of scaling keys, and
the catalogue of upstream keys a check looks keys up in."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from driftloop.annotations.keys import DEFAULT_SOURCES, OWN_KEYS, WELL_KNOWN
from driftloop.annotations.upstream import (
    AnnotationSourcesMissing,
    Constant,
    declares_key,
    go_constants,
    java_constants,
)


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
EVENTING_AUTOSCALING = "autoscaling.eventing.knative.dev"
_INT = Vocabulary("integer", integer=True)

VOCABULARIES: Mapping[str, Vocabulary] = {
    f"{EVENTING_AUTOSCALING}/class": Vocabulary(
        "eventing-kafka-broker autoscaler class",
        constants=(
            (_KB, f"{_AUTOSCALER}/keda", "AutoscalerClass"),
            (_KB, _AUTOSCALER, "AutoscalingClassDisabledAnnotationValue"),
        ),
    ),
    **{
        f"{EVENTING_AUTOSCALING}/{k}": _INT
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
        f"{EVENTING_AUTOSCALING}/",
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
            if declares_key(c):
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
            if (c.area, c.package) in reader.packages and declares_key(c) and "/" in c.value
        }

    def declaring(self, key: str) -> list[Constant]:
        """Every upstream constant that declares ``key``."""
        return [c for c in self.constants if c.value == key and declares_key(c)]

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
        prefix = f"{EVENTING_AUTOSCALING}/"
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
