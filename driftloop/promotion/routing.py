"""Traffic weights between a model's versions, and the local router that honours them.

On Kubernetes the weights are a Seldon Core v2 ``Experiment`` (``experiment_manifest``).
Locally they are one record in the blob store, ``models/<model>/routing.json``
(``{"weights": {"<version>": w, ...}, "champion": v}``), written atomically; ``Router``
reads it (cached for ``ttl_s``) and sends each request to the champion's endpoint or a
version's endpoint (``/v2/models/<m>/versions/<v>/infer``), sticky per request id.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from driftloop.blob import BlobStore
from driftloop.naming import safe_segment


@dataclass(frozen=True)
class Routing:
    """Weights per version (they sum to 1); an empty mapping means all to the champion."""

    model: str
    champion: str | None
    weights: Mapping[str, float] = field(default_factory=dict)
    mode: str = "canary"
    updated: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "champion": self.champion, "weights": dict(self.weights),
                "mode": self.mode, "updated": self.updated}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Routing:
        return cls(d["model"], d.get("champion"), {str(k): float(v) for k, v in
                                                   (d.get("weights") or {}).items()},
                   str(d.get("mode", "canary")), float(d.get("updated", 0.0)))

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


def all_to(model: str, version: str) -> Routing:
    return Routing(model, version, {}, "single", time.time())


def save(store: BlobStore, routing: Routing) -> None:
    store.put(routing_key(routing.model), json.dumps(routing.to_dict()).encode())


def load(store: BlobStore, model: str) -> Routing | None:
    try:
        return Routing.from_dict(json.loads(store.get(routing_key(model))))
    except KeyError:
        return None


def pick(routing: Routing | None, request_id: str) -> str | None:
    """The version that serves ``request_id`` (None: the champion's endpoint).

    A hash of the id picks a point in [0, 1): the same request id always lands on the
    same version, and the split matches the weights over many ids.
    """
    if routing is None or not routing.weights:
        return None
    h = int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big") / 2**64
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
    return {
        "apiVersion": "mlops.seldon.io/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": f"{model}-canary", "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "driftloop",
                                "driftloop.io/model": model}},
        "spec": {"default": f"{model}-{routing.champion}", "candidates": candidates},
    }


class Router:
    """A V2 client that splits traffic by the routing record (the local Experiment)."""

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

    def infer_tensor(self, model: str, values: Any, *, request_id: str, **kw: Any) -> Any:
        version = pick(self.routing(model), request_id)
        return self.client.infer_tensor(model, values, version=version, request_id=request_id,
                                        **kw)
