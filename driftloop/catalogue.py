"""The model catalogue: every model family driftloop serves, declared once, here.

A ``Family`` says what the family is (task, input modality), how its predictions are
judged (quality metric and its direction), what drift-check compares (input and output
features), and where its code lives (the model class; the trainer, when it retrains).
Everything else reads this table:

- serving loads a version with the entry's model class (``driftloop.serving.models.load``)
  and makes version 1 with it (``driftloop.serving.bootstrap``);
- MLServer's runtime class is ``Family.runtime``, ``seldon.runtimes.<name>.<Name>Runtime``:
  ``seldon.runtimes`` makes that module and class from the entry (no file per family) and
  the registry writes the path into each version's ``model-settings.json``;
- ``driftloop.quality`` scores with ``metric``, Flink's join labels records with it,
  drift-check and the retrain policy read ``metric``/``higher_is_better`` and the
  features, retraining runs ``trainer``;
- the demo predicts once per family with the model class's ``sample()``.

Adding a family (``objects``, the COCO detector, was added so) is two steps:

1. a model module, e.g. ``driftloop/serving/models/objects.py``, with a class that has
   ``from_artifact(artifact, *, limits=None)`` returning a model with ``modality`` and
   ``predict(media, tensor) -> dict`` (``driftloop.serving.models.Model``), a classmethod
   ``initial_version() -> FirstVersion`` (version 1's artifact, metrics, lineage) and a
   staticmethod ``sample() -> Sample | None`` (an input with known truth, or None when
   this machine cannot make one);
2. one ``Family(...)`` entry in ``FAMILIES`` below naming that class as ``loader``
   (and a ``trainer`` when the family retrains: a class in ``driftloop.retrain.trainers``
   following its ``Trainer`` protocol).

The entry's ``metric`` must be one of ``driftloop.quality.METRICS``; a new metric is
added there. The local stack serves every entry by default (``serving_models``); a
Kubernetes deployment lists its ``Model``/``InferenceService`` resources in ``seldon/k8s``
itself (they carry per-deployment sizing), pointing at the registry's version folders.

Nothing here imports driftloop's model or trainer code (nor anything else of driftloop):
it is loaded by path when used, so reading the catalogue costs nothing, pulls in no
heavy library, and settings can read it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "FAMILIES",
    "Family",
    "FirstVersion",
    "ModelClass",
    "Sample",
    "family",
    "load_path",
]


@dataclass(frozen=True)
class FirstVersion:
    """Version 1 of a family: what a fresh registry registers and crowns champion."""

    artifact: dict[str, bytes]
    metrics: dict[str, float] = field(default_factory=dict)
    lineage: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    """One input with its known truth (feedback ``truth``), e.g. for the demo."""

    data: bytes
    truth: Any


class ModelClass(Protocol):
    """What a family's ``loader`` class offers (see the module docstring)."""

    def from_artifact(self, artifact: Mapping[str, bytes], *, limits: Any = None) -> Any:
        """The loaded model (``driftloop.serving.models.Model``) checking inputs against
        ``limits`` (a ``driftloop.serving.inputs.InputLimits``; not imported here: the
        catalogue imports nothing of driftloop, so settings can read it)."""
        ...

    def initial_version(self) -> FirstVersion: ...

    def sample(self) -> Sample | None: ...


@dataclass(frozen=True)
class Family:
    """One model family: what it is, how it is judged, where its code lives."""

    name: str
    task: str
    modality: str
    metric: str
    """Per-record quality (``driftloop.quality.METRICS``)."""
    higher_is_better: bool
    loader: str
    """``module:Class`` of the model class (``ModelClass``)."""
    drift_features: tuple[str, ...] = ()
    """Input features (from preprocessing) compared against the reference profile."""
    output_features: tuple[str, ...] = ()
    """Prediction features (``quality.prediction_features``) for prediction drift."""
    trainer: str | None = None
    """``module:Class`` of its trainer (``driftloop.retrain.trainers``); None: not retrained."""

    @property
    def runtime_class(self) -> str:
        """``DigitsRuntime`` for ``digits``: the MLServer runtime class's name."""
        return "".join(p.capitalize() for p in self.name.split("_")) + "Runtime"

    @property
    def runtime(self) -> str:
        """Dotted path MLServer imports (``seldon.runtimes.<name>.<Name>Runtime``)."""
        return f"seldon.runtimes.{self.name}.{self.runtime_class}"

    def model_class(self) -> ModelClass:
        """The family's model class, imported now."""
        loaded: ModelClass = load_path(self.loader)
        return loaded


_IMAGE = ("brightness_mean", "brightness_std", "contrast", "blur")

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "speech",
            task="speech-to-text",
            modality="audio",
            metric="wer",
            higher_is_better=False,
            loader="driftloop.serving.models.speech:SpeechModel",
            drift_features=("duration_s", "rms_db", "peak", "zcr", "snr_db", "clipping_ratio"),
            output_features=("confidence", "n_words"),
        ),
        Family(
            "ocr",
            task="ocr",
            modality="image",
            metric="cer",
            higher_is_better=False,
            loader="driftloop.serving.models.ocr:OcrModel",
            drift_features=(*_IMAGE, "width", "height"),
            output_features=("confidence", "n_words", "n_chars"),
        ),
        Family(
            "faces",
            task="object-detection",
            modality="image",
            metric="iou",
            higher_is_better=True,
            loader="driftloop.serving.models.faces:FacesModel",
            drift_features=(*_IMAGE, "width", "height"),
            output_features=("n_boxes", "max_score", "box_area_kpx"),
        ),
        Family(
            "objects",
            task="object-detection",
            modality="image",
            metric="map",
            higher_is_better=True,
            loader="driftloop.serving.models.objects:ObjectsModel",
            drift_features=(*_IMAGE, "width", "height"),
            output_features=("top_label", "n_boxes", "max_score"),
        ),
        Family(
            "digits",
            task="classification",
            modality="image",
            metric="accuracy",
            higher_is_better=True,
            loader="driftloop.serving.models.digits:DigitsModel",
            drift_features=_IMAGE,
            output_features=("label", "confidence"),
            trainer="driftloop.retrain.trainers:DigitsTrainer",
        ),
    )
}
"""Every family, in the order the demo and listings show them."""


def family(name: str) -> Family:
    """The entry of ``name``; ``KeyError`` naming the known families otherwise."""
    try:
        return FAMILIES[name]
    except KeyError as e:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(FAMILIES))}") from e


def load_path(path: str) -> Any:
    """The object a ``module:name`` path names, importing its module."""
    module, _, name = path.partition(":")
    if not module or not name:
        raise ValueError(f"{path!r} is not a module:name path")
    return getattr(importlib.import_module(module), name)
