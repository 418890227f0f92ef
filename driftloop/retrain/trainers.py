"""Adapters from the generic training pipeline to each retrainable model's trainer.

A trainer knows its base dataset and holdout, how a labeled feedback record becomes a
training row, how to fit and evaluate an artifact, and which outputs describe its
predictions for the reference drift profile. A family is retrainable when its
``driftloop.catalogue`` entry names its trainer class here; only ``digits`` is today.

A labeled record that cannot become a row raises ``RowSkipped`` with a short reason: the
pipeline skips it and counts it per reason in the run's metrics, so one bad record (an
unreadable input, an input reference outside the model's inputs) never fails a run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from driftloop.blob import BlobStore, check_key
from driftloop.catalogue import FAMILIES, load_path
from driftloop.errors import BadRequest
from driftloop.inputlog import decode_tensor
from driftloop.inputlog import inputs_prefix as kept_inputs_prefix
from driftloop.naming import safe_segment

if TYPE_CHECKING:
    from driftloop.serving.models.digits import Dataset

INPUTS_KIND = "preprocessed"
"""Inputs a prediction can reference are what the preprocess job stored for its model,
and what the model server kept of its answered inputs (``driftloop.inputlog``)."""


def inputs_prefix(model: str) -> str:
    """``preprocessed/model=<m>/``: the preprocess job's stored inputs of ``model``."""
    return f"{INPUTS_KIND}/model={safe_segment(model, field='model')}/"


def input_prefixes(model: str) -> tuple[str, ...]:
    """The only places a training row's input may come from."""
    return inputs_prefix(model), kept_inputs_prefix(model)


class RowSkipped(Exception):
    """One labeled record that cannot become a training row, and why (a metric suffix)."""

    REASONS = ("no_label", "bad_features", "no_input", "input_outside_inputs",
               "input_missing", "input_expired", "input_unreadable")

    def __init__(self, reason: str, detail: str = "", *, ref: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.ref = ref
        """The input reference the record named, when the reason is about it."""


def read_input(store: BlobStore, model: str, ref: object) -> bytes:
    """The stored input a labeled record references, confined to the model's inputs."""
    if not isinstance(ref, str) or not ref:
        raise RowSkipped("no_input")
    try:
        check_key(ref)
    except ValueError as e:
        raise RowSkipped("input_outside_inputs", str(e)[:200]) from e
    if not ref.startswith(input_prefixes(model)):
        raise RowSkipped("input_outside_inputs", f"{ref[:200]!r} is not under "
                         f"{' or '.join(input_prefixes(model))}")
    try:
        return store.get(ref)
    except (KeyError, ValueError) as e:
        raise RowSkipped("input_missing", ref[:200], ref=ref[:300]) from e


class Trainer(Protocol):
    model: str
    metric: str

    def base(self) -> tuple[Any, Any]:
        """(train, holdout) of the base data, the same on every call."""
        ...

    def row(self, record: Mapping[str, Any], store: BlobStore) -> tuple[Any, Any]:
        """(features, label) of one labeled record; ``RowSkipped`` when it cannot train."""
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


@runtime_checkable
class ScoresRows(Protocol):
    """A trainer that also scores each row of ``outputs`` under the family's metric: the
    pipeline then fits the version's quality calibration on its evaluation data (the
    labeled reference window of ``driftloop.monitoring.estimate``)."""

    def row_qualities(self, artifact: Mapping[str, bytes], data: Any) -> list[float]:
        """One quality per row, in the order ``outputs`` gives the confidences."""
        ...


class DigitsTrainer:
    """scikit-learn's digits; feedback rows carry 64 pixels or an input image reference."""

    model = "digits"
    metric = FAMILIES["digits"].metric

    def base(self) -> tuple[Dataset, Dataset]:
        from driftloop.serving.models import digits

        return digits.split(digits.load_dataset())

    def row(self, record: Mapping[str, Any], store: BlobStore) -> tuple[Any, Any]:
        import numpy as np

        from driftloop.serving.models import digits

        truth = record.get("truth")
        label = truth.get("label") if isinstance(truth, Mapping) else truth
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        if isinstance(label, bool) or not isinstance(label, int | str):
            raise RowSkipped("no_label", f"truth {str(label)[:50]!r} is not a digit")
        try:
            y = int(label)
        except ValueError as e:
            raise RowSkipped("no_label", f"truth {str(label)[:50]!r} is not a digit") from e
        if not 0 <= y <= 9:
            raise RowSkipped("no_label", f"truth {y} is not a digit 0..9")
        pixels = truth.get("pixels") if isinstance(truth, Mapping) else None
        if pixels is None:
            pixels = record.get("features")
        if pixels is not None:
            try:
                x = np.asarray(pixels, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError) as e:
                raise RowSkipped("bad_features", "pixels are not numbers") from e
            if x.size != digits.N_FEATURES or not np.all(np.isfinite(x)):
                raise RowSkipped("bad_features", f"{x.size} values, {digits.N_FEATURES} "
                                 "finite ones needed")
            return x, y
        media = read_input(store, self.model, record.get("input_ref"))
        from driftloop.serving import inputs

        try:
            tensor = decode_tensor(media)
        except ValueError:
            tensor = None
        if tensor is not None:  # a kept V2 tensor: [64], [1, 64], [8, 8] or [1, 8, 8] pixels
            x = np.asarray(tensor, dtype=np.float64).reshape(-1)
            if x.size != digits.N_FEATURES or not np.all(np.isfinite(x)):
                raise RowSkipped("bad_features", f"kept tensor of shape {list(tensor.shape)}: "
                                 f"one digit of {digits.N_FEATURES} finite pixels needed")
            return x, y
        try:
            return digits.image_to_features(inputs.decode_image(media, mode="L"))[0], y
        except Exception as e:  # untrusted bytes: whatever the decoder raises skips the row
            raise RowSkipped("input_unreadable", f"{type(e).__name__}: {str(e)[:200]}") from e

    def dataset(self, rows: Sequence[tuple[Any, Any]]) -> Dataset:
        import numpy as np

        from driftloop.serving.models.digits import N_FEATURES, Dataset

        if not rows:
            return Dataset(np.empty((0, N_FEATURES)), np.empty((0,), dtype=np.int64))
        return Dataset(np.vstack([r[0] for r in rows]), np.asarray([r[1] for r in rows]))

    def concat(self, a: Dataset, b: Dataset) -> Dataset:
        import numpy as np

        from driftloop.serving.models.digits import Dataset

        return Dataset(np.vstack([a.X, b.X]), np.concatenate([a.y, b.y]).astype("int64"))

    def size(self, data: Dataset) -> int:
        return len(data)

    def train(self, data: Dataset, params: Mapping[str, Any]) -> dict[str, bytes]:
        from driftloop.serving.models import digits

        return digits.train(data, params)

    def score(self, artifact: Mapping[str, bytes], data: Dataset) -> float:
        from driftloop.serving.models import digits

        return float(digits.evaluate(artifact, data)["accuracy"]) if len(data) else float("nan")

    def outputs(self, artifact: Mapping[str, bytes], data: Dataset) -> dict[str, Any]:
        from driftloop.serving.models.digits import DigitsModel

        out = DigitsModel.from_artifact(artifact).classify(data.X)
        return {"label": [float(v) for v in out["labels"]],
                "confidence": [float(v) for v in out["scores"]]}

    def row_qualities(self, artifact: Mapping[str, bytes], data: Dataset) -> list[float]:
        from driftloop.serving.models.digits import DigitsModel

        labels = DigitsModel.from_artifact(artifact).classify(data.X)["labels"]
        return [1.0 if int(p) == int(y) else 0.0 for p, y in zip(labels, data.y, strict=True)]

    def to_json(self, data: Dataset) -> dict[str, Any]:
        return {"X": data.X.tolist(), "y": data.y.tolist()}

    def from_json(self, doc: Mapping[str, Any]) -> Dataset:
        import numpy as np

        from driftloop.serving.models.digits import N_FEATURES, Dataset

        x = np.asarray(doc.get("X") or [], dtype=np.float64).reshape(-1, N_FEATURES)
        return Dataset(x, np.asarray(doc.get("y") or [], dtype=np.int64))


def retrainable() -> list[str]:
    """The families whose catalogue entry names a trainer."""
    return sorted(name for name, f in FAMILIES.items() if f.trainer)


def trainer_for(model: str) -> Trainer:
    """The trainer of ``model`` (its ``driftloop.catalogue`` entry's ``trainer``); 400
    naming the retrainable models otherwise."""
    entry = FAMILIES.get(model)
    if entry is None or entry.trainer is None:
        raise BadRequest(f"model {model!r} has no trainer; retrainable: "
                         f"{', '.join(retrainable())}")
    trainer: Trainer = load_path(entry.trainer)()
    return trainer
