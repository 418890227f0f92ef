"""First versions of the served models, so a fresh registry has a champion to load.

speech, ocr and faces carry configuration only (their weights ship in packages);
digits is trained on scikit-learn's bundled digits and carries its holdout accuracy.
"""

from __future__ import annotations

from collections.abc import Iterable

from driftloop.registry import Registry


def initial_artifact(model: str) -> tuple[dict[str, bytes], dict[str, float], dict[str, str]]:
    """Artifact, metrics and lineage of version 1 of ``model``."""
    if model == "speech":
        from driftloop.serving.models.speech import SpeechModel

        return SpeechModel.artifact(), {}, {"weights": "pocketsphinx wheel, en-us model"}
    if model == "ocr":
        from driftloop.serving.models.ocr import OcrModel

        return OcrModel.artifact(), {}, {"weights": "Debian tesseract-ocr-eng"}
    if model == "faces":
        from driftloop.serving.models.faces import FacesModel

        return FacesModel.artifact(), {}, {"weights": "opencv-python-headless haarcascades"}
    if model == "digits":
        from driftloop.serving.models import digits

        train, holdout = digits.split(digits.load_dataset())
        artifact = digits.train(train, {})
        metrics = digits.evaluate(artifact, holdout)
        return artifact, metrics, {"dataset": "sklearn.datasets.load_digits", "split": "seed=0",
                                   "train_rows": str(len(train))}
    raise KeyError(f"unknown model {model!r}")


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
