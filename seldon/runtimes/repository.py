"""An MLServer model repository backed by driftloop's registry instead of a folder.

For each served model it lists the champion as the unversioned entry (what
``/v2/models/<m>/infer`` answers with) and every aliased version (champion,
challenger) as a versioned entry (``/v2/models/<m>/versions/<v>/infer``). A call to
``POST /v2/repository/models/<m>/load`` re-reads the registry: a moved champion is
loaded before the old one is unloaded, and versions no longer aliased are unloaded,
all without a restart. A model with versions but no champion serves its newest.

Canary: when the registry gives the challenger a traffic weight, the champion entry also
loads the challenger and lets it answer that share of its requests (the local stand-in
for a Seldon Experiment); every answer names the version that gave it. The traffic mode
says how: canary (a fixed share), bandit (the share is re-read every second) or shadow
(the challenger answers mirrored copies, never the app; a Seldon Experiment's mirror).
"""

from __future__ import annotations

import asyncio

from mlserver.errors import ModelNotFound
from mlserver.repository import ModelRepository
from mlserver.settings import ModelParameters, ModelSettings

from driftloop.blob import open_store
from driftloop.registry import Registry
from driftloop.settings import Settings
from seldon.runtimes import RUNTIMES


class RegistryRepository(ModelRepository):
    """Model settings generated from the registry's aliases."""

    def __init__(self, root: str = "", models: list[str] | None = None) -> None:
        self._settings = Settings()  # MLServer builds the repository: an edge
        self._models = list(models or self._settings.serving_model_list)
        unknown = [m for m in self._models if m not in RUNTIMES]
        if unknown:
            raise ValueError(f"no runtime for models {unknown}; known: {sorted(RUNTIMES)}")

    def _entry(self, model: str, version: str, *, versioned: bool, alias: str,
               canary: tuple[str, int, str] | None = None) -> ModelSettings:
        extra: dict[str, object] = {"registry_version": version, "alias": alias}
        if canary is not None:
            (extra["challenger_version"], extra["challenger_weight"],
             extra["challenger_mode"]) = canary
        return ModelSettings(
            name=model,
            implementation=RUNTIMES[model],
            parameters=ModelParameters(
                uri=f"models/{model}/{version}",
                version=version if versioned else None,
                extra=extra,
            ),
        )

    def _list(self) -> list[ModelSettings]:
        registry = Registry(open_store(self._settings.resolved_blob_url, self._settings))
        found: list[ModelSettings] = []
        for model in self._models:
            aliases = registry.aliases(model)
            champion = aliases.get("champion")
            if champion is None:
                versions = registry.versions(model)
                if not versions:
                    continue
                champion = versions[-1]
            challenger = aliases.get("challenger")
            weight = registry.challenger_weight(model) if challenger else 0
            mode = registry.traffic_mode(model) if challenger else "canary"
            # A bandit or a shadow holds its challenger even at a share of 0 (the bandit's
            # share moves without a reload; a shadow never answers the app).
            takes_part = bool(weight) or mode in ("bandit", "shadow")
            canary = (challenger, weight, mode) if challenger and challenger != champion \
                and takes_part else None
            found.append(self._entry(model, champion, versioned=False, alias="champion",
                                     canary=canary))
            by_version: dict[str, str] = {champion: "champion"}
            for alias, version in aliases.items():
                by_version.setdefault(version, alias)
            for version, alias in sorted(by_version.items(), key=lambda kv: int(kv[0])):
                found.append(self._entry(model, version, versioned=True, alias=alias))
        return found

    async def list(self) -> list[ModelSettings]:
        return await asyncio.to_thread(self._list)

    async def find(self, name: str) -> list[ModelSettings]:
        found = [s for s in await self.list() if s.name == name]
        if not found:
            raise ModelNotFound(name)
        return found
