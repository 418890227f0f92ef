"""Adapters from the generic training pipeline to each retrainable model's trainer.

A trainer knows its base dataset and holdout, how a labeled feedback record becomes a
training row, how to fit and evaluate an artifact, and which outputs describe its
predictions for the reference drift profile. Only ``digits`` is retrainable today.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from driftloop.blob import BlobStore
from driftloop.errors import BadRequest


class Trainer(Protocol):
    model: str
    metric: str

    def base(self) -> tuple[Any, Any]:
        """(train, holdout) of the base data, the same on every call."""
        ...

    def row(self, record: Mapping[str, Any], store: BlobStore) -> tuple[Any, Any] | None:
        """(features, label) of one labeled record, or None when it carries no input."""
        ...

    def dataset(self, rows: Sequence[tuple[Any, Any]]) -> Any: ...

    def concat(self, a: Any, b: Any) -> Any: ...

    def size(self, data: Any) -> int: ...

    def train(self, data: Any, params: Mapping[str, Any]) -> dict[str, bytes]: ...

    def score(self, artifact: Mapping[str, bytes], data: Any) -> float: ...

    def outputs(self, artifact: Mapping[str, bytes], data: Any) -> dict[str, Any]:
        """Output-feature columns (``driftloop.quality`` output_features) for a profile."""
        ...

    def to_json(self, data: Any) -> dict[str, Any]: ...

    def from_json(self, doc: Mapping[str, Any]) -> Any: ...


class DigitsTrainer:
    """scikit-learn's digits; feedback rows carry 64 pixels or an input image reference."""

    model = "digits"
    metric = "accuracy"

    def base(self) -> tuple[Any, Any]:
        from driftloop.serving.models import digits

        return digits.split(digits.load_dataset())

    def row(self, record: Mapping[str, Any], store: BlobStore) -> tuple[Any, Any] | None:
        import numpy as np

        from driftloop.serving.models import digits

        truth = record.get("truth")
        label = truth.get("label") if isinstance(truth, Mapping) else truth
        try:
            y = int(label)
        except (TypeError, ValueError):
            return None
        pixels = truth.get("pixels") if isinstance(truth, Mapping) else None
        if pixels is None:
            pixels = record.get("features")
        if pixels is not None:
            x = np.asarray(pixels, dtype=np.float64).reshape(-1)
            return (x, y) if x.size == digits.N_FEATURES and np.all(np.isfinite(x)) else None
        ref = record.get("input_ref")
        if isinstance(ref, str) and ref:
            try:
                media = store.get(ref)
            except (KeyError, ValueError):
                return None
            from driftloop.serving import inputs

            return digits.image_to_features(inputs.decode_image(media, mode="L"))[0], y
        return None

    def dataset(self, rows: Sequence[tuple[Any, Any]]) -> Any:
        import numpy as np

        from driftloop.serving.models.digits import N_FEATURES, Dataset

        if not rows:
            return Dataset(np.empty((0, N_FEATURES)), np.empty((0,), dtype=np.int64))
        return Dataset(np.vstack([r[0] for r in rows]), np.asarray([r[1] for r in rows]))

    def concat(self, a: Any, b: Any) -> Any:
        import numpy as np

        from driftloop.serving.models.digits import Dataset

        return Dataset(np.vstack([a.X, b.X]), np.concatenate([a.y, b.y]).astype("int64"))

    def size(self, data: Any) -> int:
        return len(data)

    def train(self, data: Any, params: Mapping[str, Any]) -> dict[str, bytes]:
        from driftloop.serving.models import digits

        return digits.train(data, params)

    def score(self, artifact: Mapping[str, bytes], data: Any) -> float:
        from driftloop.serving.models import digits

        return float(digits.evaluate(artifact, data)["accuracy"]) if len(data) else float("nan")

    def outputs(self, artifact: Mapping[str, bytes], data: Any) -> dict[str, Any]:
        from driftloop.serving.models.digits import DigitsModel

        out = DigitsModel.from_artifact(artifact).classify(data.X)
        return {"label": [float(v) for v in out["labels"]],
                "confidence": [float(v) for v in out["scores"]]}

    def to_json(self, data: Any) -> dict[str, Any]:
        return {"X": data.X.tolist(), "y": data.y.tolist()}

    def from_json(self, doc: Mapping[str, Any]) -> Any:
        import numpy as np

        from driftloop.serving.models.digits import N_FEATURES, Dataset

        x = np.asarray(doc.get("X") or [], dtype=np.float64).reshape(-1, N_FEATURES)
        return Dataset(x, np.asarray(doc.get("y") or [], dtype=np.int64))


TRAINERS: dict[str, type[DigitsTrainer]] = {"digits": DigitsTrainer}


def trainer_for(model: str) -> DigitsTrainer:
    """The trainer of ``model``; 400 naming the retrainable models otherwise."""
    try:
        return TRAINERS[model]()
    except KeyError as e:
        raise BadRequest(f"model {model!r} has no trainer; retrainable: "
                         f"{', '.join(sorted(TRAINERS))}") from e
