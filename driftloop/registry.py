"""The model registry on the blob store: versions with manifests, and aliases.

Layout (keys relative to the blob store's root)::

    models/<model>/<version>/claim.json         the number's claim (create-if-absent)
    models/<model>/<version>/manifest.json      metrics, lineage, parent, created, files
    models/<model>/<version>/artifact/<file>    what the runtime loads
    models/<model>/<version>/artifact/model-settings.json   for Seldon Core v2 / KServe
    models/<model>/aliases/<alias>.json         the alias's current version (one atomic put)
    models/<model>/aliases/<alias>/history/<ts>-<n>.json   every change, append-only
    models/<model>/traffic.json                 the challenger's share of the traffic (canary)

Versions are positive integers as strings (``"1"``, ``"2"``, …), increasing per model;
a number is taken by a create-if-absent claim (``BlobStore.put_if_absent``), so replicas
registering at once get distinct versions and never overwrite each other's files.
An alias is moved by one atomic ``put`` of its pointer object, so a reader sees the old
or the new version, never a mix; each move also writes its own history object, so
concurrent moves never lose history.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from driftloop.blob import BlobStore
from driftloop.catalogue import FAMILIES
from driftloop.errors import BadRequest, Conflict, NotFound
from driftloop.naming import safe_segment

DEPLOY_SETTINGS = "model-settings.json"
CLAIM = "claim.json"
"""Created (if absent) before a version's files: who took the number."""
ALIASES: tuple[str, ...] = ("champion", "challenger")
TRAFFIC_MODES: tuple[str, ...] = ("canary", "bandit", "shadow")
PREFIX = "models"


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model, as its manifest records it."""

    model: str
    version: str
    created: str
    files: tuple[str, ...]
    metrics: Mapping[str, float] = field(default_factory=dict)
    lineage: Mapping[str, Any] = field(default_factory=dict)
    parent: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "created": self.created,
            "files": list(self.files),
            "metrics": dict(self.metrics),
            "lineage": dict(self.lineage),
            "parent": self.parent,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelVersion:
        return cls(
            model=d["model"],
            version=str(d["version"]),
            created=d["created"],
            files=tuple(d.get("files", ())),
            metrics=dict(d.get("metrics", {})),
            lineage=dict(d.get("lineage", {})),
            parent=d.get("parent"),
        )


@dataclass(frozen=True)
class AliasChange:
    """One move of an alias (what the history holds)."""

    model: str
    alias: str
    version: str
    previous: str | None
    time: str
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "alias": self.alias, "version": self.version,
                "previous": self.previous, "time": self.time, "reason": self.reason}


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _check_alias(alias: str) -> str:
    if alias not in ALIASES:
        raise BadRequest(f"alias {alias!r} is not one of {', '.join(ALIASES)}")
    return alias


class Registry:
    """Versions and aliases of every model, kept in one blob store."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store

    # ------------------------------------------------------------------ keys

    @staticmethod
    def version_prefix(model: str, version: str) -> str:
        m, v = safe_segment(model, field="model"), safe_segment(version, field="version")
        return f"{PREFIX}/{m}/{v}"

    def artifact_key(self, model: str, version: str, name: str) -> str:
        return f"{self.version_prefix(model, version)}/artifact/{safe_segment(name, field='file')}"

    # ------------------------------------------------------------------ versions

    def models(self) -> list[str]:
        """Names of the models that have at least one version."""
        names = {k.split("/")[1] for k in self.store.list(f"{PREFIX}/")
                 if k.endswith("/manifest.json")}
        return sorted(names)

    def versions(self, model: str) -> list[str]:
        """Versions of ``model``, oldest first."""
        prefix = f"{PREFIX}/{safe_segment(model, field='model')}/"
        found = []
        for key in self.store.list(prefix):
            parts = key[len(prefix):].split("/")
            if len(parts) == 2 and parts[1] == "manifest.json" and parts[0].isdigit():
                found.append(parts[0])
        return sorted(found, key=int)

    def register(
        self,
        model: str,
        artifact: Mapping[str, bytes],
        *,
        metrics: Mapping[str, float] | None = None,
        lineage: Mapping[str, Any] | None = None,
        parent: str | None = None,
    ) -> ModelVersion:
        """Store a new version: artifact files first, then the manifest that makes it visible.

        A version without a manifest is invisible, so a crash mid-upload leaves nothing
        half-registered.
        """
        safe_segment(model, field="model")
        if not artifact:
            raise BadRequest("artifact: at least one file is required")
        version = self._claim_version(model)
        for name, data in artifact.items():
            self.store.put(self.artifact_key(model, version, name), data)
        runtime = FAMILIES[model].runtime if model in FAMILIES else None
        if runtime and DEPLOY_SETTINGS not in artifact:
            # Seldon Core v2 and KServe download the artifact folder and start MLServer on
            # it: the folder carries its own model-settings.json (not one of the files).
            self.store.put(self.artifact_key(model, version, DEPLOY_SETTINGS), json.dumps({
                "name": model, "implementation": runtime,
                "parameters": {"version": version, "extra": {"registry_version": version}},
            }, indent=1).encode())
        mv = ModelVersion(
            model=model,
            version=version,
            created=_now(),
            files=tuple(sorted(artifact)),
            metrics={k: float(v) for k, v in (metrics or {}).items()},
            lineage=dict(lineage or {}),
            parent=parent,
        )
        if not self.store.put_if_absent(f"{self.version_prefix(model, version)}/manifest.json",
                                        json.dumps(mv.to_dict(), indent=1).encode()):
            raise Conflict(f"model {model!r} version {version} was registered by another "
                           "writer despite the claim")
        return mv

    def _claim_version(self, model: str) -> str:
        """The next free version number, taken with a create-if-absent claim object.

        Concurrent registrations (other processes, other replicas) each win a different
        number: a lost claim moves on to the next one, so nothing is ever overwritten.
        A claim whose upload crashed leaves a gap in the numbers, never a visible version.
        """
        prefix = f"{PREFIX}/{safe_segment(model, field='model')}/"
        taken = [int(p[0]) for k in self.store.list(prefix)
                 if len(p := k[len(prefix):].split("/")) >= 2 and p[0].isdigit()]
        version = max(taken, default=0) + 1
        nonce = json.dumps({"claimed": _now(), "nonce": uuid.uuid4().hex}).encode()
        while not self.store.put_if_absent(
                f"{self.version_prefix(model, str(version))}/{CLAIM}", nonce):
            version += 1
        return str(version)

    def get(self, model: str, version: str) -> ModelVersion:
        """The manifest of one version (``NotFound`` when it does not exist)."""
        try:
            raw = self.store.get(f"{self.version_prefix(model, version)}/manifest.json")
        except KeyError as e:
            raise NotFound(f"model {model!r} has no version {version!r}") from e
        return ModelVersion.from_dict(json.loads(raw))

    def artifact(self, model: str, version: str) -> dict[str, bytes]:
        """Every artifact file of one version, by name."""
        mv = self.get(model, version)
        return {name: self.store.get(self.artifact_key(model, version, name))
                for name in mv.files}

    # ------------------------------------------------------------------ aliases

    def _alias_key(self, model: str, alias: str) -> str:
        return f"{PREFIX}/{safe_segment(model, field='model')}/aliases/{_check_alias(alias)}.json"

    def alias(self, model: str, alias: str) -> str | None:
        """The version ``alias`` points at, or None when it is unset."""
        try:
            raw = self.store.get(self._alias_key(model, alias))
        except KeyError:
            return None
        version: str | None = json.loads(raw).get("version")
        return version

    def aliases(self, model: str) -> dict[str, str]:
        """Every set alias of ``model``."""
        return {a: v for a in ALIASES if (v := self.alias(model, a)) is not None}

    def set_alias(self, model: str, alias: str, version: str, *, reason: str = "") -> AliasChange:
        """Point ``alias`` at ``version`` (which must exist) and record the move."""
        self.get(model, version)
        change = AliasChange(model, _check_alias(alias), version, self.alias(model, alias),
                             _now(), reason)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        self.store.put(
            f"{PREFIX}/{model}/aliases/{alias}/history/{stamp}-{uuid.uuid4().hex[:8]}.json",
            json.dumps(change.to_dict()).encode(),
        )
        self.store.put(self._alias_key(model, alias), json.dumps(change.to_dict()).encode())
        return change

    def clear_alias(self, model: str, alias: str) -> None:
        """Unset ``alias`` (for example the challenger after a promotion)."""
        self.store.delete(self._alias_key(model, alias))

    def history(self, model: str, alias: str) -> list[AliasChange]:
        """Every move of ``alias``, oldest first."""
        m = safe_segment(model, field="model")
        prefix = f"{PREFIX}/{m}/aliases/{_check_alias(alias)}/history/"
        return [AliasChange(**json.loads(self.store.get(k))) for k in self.store.list(prefix)]

    # ------------------------------------------------------------------ canary traffic

    def _traffic_key(self, model: str) -> str:
        return f"{PREFIX}/{safe_segment(model, field='model')}/traffic.json"

    def set_challenger_weight(self, model: str, weight: int, *, mode: str = "canary") -> None:
        """Share of the champion's requests (percent) the challenger answers: the local
        equivalent of a Seldon Experiment's candidate weights. 0 turns the canary off.
        ``mode``: canary; bandit (the server re-reads the weight every second, no reload);
        shadow (the challenger answers mirrored copies of every request, never the app)."""
        if not isinstance(weight, int) or not 0 <= weight <= 100:
            raise BadRequest(f"challenger weight {weight!r} must be an integer 0..100")
        if mode not in TRAFFIC_MODES:
            raise BadRequest(f"traffic mode {mode!r} must be one of {list(TRAFFIC_MODES)}")
        self.store.put(self._traffic_key(model), json.dumps(
            {"challenger_weight": weight, "mode": mode, "time": _now()}).encode())

    def traffic_mode(self, model: str) -> str:
        """How the challenger takes part: canary, bandit or shadow (see above)."""
        try:
            mode = json.loads(self.store.get(self._traffic_key(model))).get("mode")
        except KeyError:
            return "canary"
        return mode if mode in TRAFFIC_MODES else "canary"

    def challenger_weight(self, model: str) -> int:
        try:
            return int(json.loads(self.store.get(self._traffic_key(model)))["challenger_weight"])
        except KeyError:
            return 0

    def resolve(self, model: str, ref: str) -> str:
        """A version from an alias name or a version string (``NotFound`` otherwise)."""
        if ref in ALIASES:
            version = self.alias(model, ref)
            if version is None:
                raise NotFound(f"model {model!r} has no {ref} alias")
            return version
        self.get(model, ref)
        return ref

    def describe(self) -> Iterator[dict[str, Any]]:
        """One summary per model: versions with metrics, and aliases (what ``models`` lists)."""
        for model in self.models():
            versions = [self.get(model, v) for v in self.versions(model)]
            yield {
                "name": model,
                "versions": [
                    {"version": v.version, "created": v.created, "metrics": dict(v.metrics),
                     "parent": v.parent}
                    for v in versions
                ],
                "aliases": self.aliases(model),
            }
