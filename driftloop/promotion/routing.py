"""Traffic weights between a model's versions.

On Kubernetes the weights are a Seldon Core v2 ``Experiment`` (``experiment_manifest``).
Locally they are one record in the blob store, ``models/<model>/routing.json``
(``{"weights": {"<version>": w, ...}, "champion": v}``), and the challenger's share is
handed to the model server (``Registry.set_challenger_weight``): the champion's public
endpoint answers that share of requests with the challenger, chosen by the request id
(``canary_point``, the same split ``pick`` describes), so every client takes part in the
canary, not only those that route themselves.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from driftloop.annotations import MODEL_LABEL
from driftloop.blob import BlobStore
from driftloop.naming import safe_segment

if TYPE_CHECKING:
    from driftloop.serving.v2 import Prediction


@dataclass(frozen=True)
class Routing:
    """Weights per version (they sum to 1); an empty mapping means all to the champion."""

    model: str
    champion: str | None
    weights: Mapping[str, float] = field(default_factory=dict)
    mode: str = "canary"
    updated: float = 0.0
    shadow: str | None = None
    """A version answering mirrored copies of the champion's requests (mode shadow)."""
    figures: Mapping[str, Any] = field(default_factory=dict)
    """What the weights rest on (the bandit's P(best) and rewards per version)."""

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "champion": self.champion, "weights": dict(self.weights),
                "mode": self.mode, "updated": self.updated, "shadow": self.shadow,
                "figures": dict(self.figures)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Routing:
        return cls(d["model"], d.get("champion"), {str(k): float(v) for k, v in
                                                   (d.get("weights") or {}).items()},
                   str(d.get("mode", "canary")), float(d.get("updated", 0.0)),
                   d.get("shadow"), dict(d.get("figures") or {}))

    def weight_of(self, version: str) -> float:
        if not self.weights:
            return 1.0 if version == self.champion else 0.0
        return self.weights.get(version, 0.0)


def routing_key(model: str) -> str:
    return f"models/{safe_segment(model, field='model')}/routing.json"


def canary(model: str, champion: str, challenger: str, weight: float) -> Routing:
    w = min(max(weight, 0.0), 1.0)
    return Routing(model, champion, {champion: round(1.0 - w, 6), challenger: round(w, 6)},
                   "canary", time.time())


def shadow(model: str, champion: str, challenger: str) -> Routing:
    """Every request answered by the champion, mirrored to the challenger."""
    return Routing(model, champion, {}, "shadow", time.time(), challenger)


def all_to(model: str, version: str) -> Routing:
    return Routing(model, version, {}, "single", time.time())


def save(store: BlobStore, routing: Routing) -> None:
    store.put(routing_key(routing.model), json.dumps(routing.to_dict()).encode())


def load(store: BlobStore, model: str) -> Routing | None:
    try:
        return Routing.from_dict(json.loads(store.get(routing_key(model))))
    except KeyError:
        return None


def challenger_share(routing: Routing) -> int:
    """The percentage of the champion endpoint's requests the other version answers."""
    others = [w for v, w in routing.weights.items() if v != routing.champion]
    return round(100 * sum(others))


def canary_point(request_id: str) -> float:
    """A request id's fixed point in [0, 1): the same id always falls on the same side of
    a canary split (used by the router and by the model server alike)."""
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big") / 2**64


def pick(routing: Routing | None, request_id: str) -> str | None:
    """The version that serves ``request_id`` (None: the champion's endpoint).

    A hash of the id picks a point in [0, 1): the same request id always lands on the
    same version, and the split matches the weights over many ids.
    """
    if routing is None or not routing.weights:
        return None
    h = canary_point(request_id)
    acc = 0.0
    chosen = None
    for version, w in sorted(routing.weights.items(), key=lambda kv: int(kv[0])
                             if kv[0].isdigit() else kv[0]):
        acc += w
        chosen = version
        if h < acc:
            break
    return None if chosen == routing.champion else chosen


def experiment_manifest(model: str, routing: Routing, *, namespace: str = "driftloop"
                        ) -> dict[str, Any]:
    """The Seldon Core v2 Experiment carrying the same weights (integer percentages)."""
    safe_segment(model, field="model")
    weights = dict(routing.weights) or ({routing.champion: 1.0} if routing.champion else {})
    candidates = [{"name": f"{model}-{v}", "weight": round(w * 100)}
                  for v, w in sorted(weights.items())]
    spec: dict[str, Any] = {"default": f"{model}-{routing.champion}", "candidates": candidates}
    if routing.shadow is not None:
        spec["mirror"] = {"name": f"{model}-{routing.shadow}", "percent": 100}
    return {
        "apiVersion": "mlops.seldon.io/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": f"{model}-canary", "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "driftloop",
                                MODEL_LABEL: model}},
        "spec": spec,
    }


class Router:
    """A V2 client for a model's public endpoint that also reads the routing record."""

    def __init__(self, store: BlobStore, base_url: str, *, ttl_s: float = 0.5,
                 timeout_s: float = 60.0) -> None:
        from driftloop.serving.client import V2Client

        self.store = store
        self.client = V2Client(base_url, timeout_s=timeout_s)
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Routing | None]] = {}

    def close(self) -> None:
        self.client.close()

    def routing(self, model: str) -> Routing | None:
        hit = self._cache.get(model)
        if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        r = load(self.store, model)
        self._cache[model] = (time.monotonic(), r)
        return r

    def infer_tensor(
        self, model: str, values: Any, *, request_id: str, **kw: Any
    ) -> Prediction:
        """Through the public endpoint: the server applies the canary split by request id."""
        return self.client.infer_tensor(model, values, request_id=request_id, **kw)
