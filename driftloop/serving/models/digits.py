"""Handwritten digits (scikit-learn's bundled 8x8 set): the retrainable model and its trainer.

``train(dataset, params) -> artifact`` and ``evaluate(artifact, dataset) -> metrics`` are
what ``driftloop train`` calls; the artifact is the registry's file mapping. Training on
the ~1,300-image split takes well under a second on one core.
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from driftloop.catalogue import FirstVersion, Sample
from driftloop.serving import inputs

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

N_FEATURES = 64
DEFAULT_PARAMS: dict[str, Any] = {"kind": "svc", "C": 10.0, "gamma": 0.001, "seed": 0}


@dataclass(frozen=True)
class Dataset:
    """Rows of 64 pixel intensities in 0..16 (white ink on black) and their labels."""

    X: NDArray[np.float64]
    y: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.y)


def load_dataset() -> Dataset:
    """scikit-learn's bundled digits (1,797 images)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return Dataset(d.data.astype("float64"), d.target.astype("int64"))


def split(dataset: Dataset, *, test_size: float = 0.25, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Stratified train/holdout split, the same for the same seed."""
    from sklearn.model_selection import train_test_split

    xa, xb, ya, yb = train_test_split(dataset.X, dataset.y, test_size=test_size,
                                      random_state=seed, stratify=dataset.y)
    return Dataset(xa, ya), Dataset(xb, yb)


def train(dataset: Dataset, params: Mapping[str, Any] | None = None) -> dict[str, bytes]:
    """Fit a classifier; the artifact holds the pickled estimator and the params used."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    p = {**DEFAULT_PARAMS, **(params or {})}
    if p["kind"] == "svc":
        est = SVC(C=float(p["C"]), gamma=float(p["gamma"]), probability=True,
                  random_state=int(p["seed"]))
    elif p["kind"] == "logreg":
        est = make_pipeline(StandardScaler(),
                            LogisticRegression(C=float(p["C"]), max_iter=2000))
    else:
        raise ValueError(f"params.kind {p['kind']!r} is not one of svc, logreg")
    est.fit(dataset.X, dataset.y)
    buf = io.BytesIO()
    pickle.dump(est, buf, protocol=pickle.HIGHEST_PROTOCOL)
    return {"model.pkl": buf.getvalue(), "params.json": json.dumps(p).encode()}


def evaluate(artifact: Mapping[str, bytes], dataset: Dataset) -> dict[str, float]:
    """Holdout accuracy of an artifact (the model's declared metric)."""
    model = DigitsModel.from_artifact(artifact)
    predicted = model.estimator.predict(dataset.X)
    return {"accuracy": float((predicted == dataset.y).mean()), "n": float(len(dataset))}


def image_to_features(gray: Any) -> Any:
    """A grayscale image of one digit as the 64 features (8x8, 0..16, light ink on dark).

    Dark-on-light images (the usual scan) are inverted first.
    """
    import numpy as np
    from PIL import Image

    arr = np.asarray(gray, dtype=np.float64)
    if arr.mean() > 127:
        arr = 255.0 - arr
    small = Image.fromarray(arr.astype(np.uint8)).resize((8, 8), Image.Resampling.BILINEAR)
    return (np.asarray(small, dtype=np.float64) / 255.0 * 16.0).reshape(1, N_FEATURES)


@dataclass
class DigitsModel:
    """A fitted scikit-learn classifier over 8x8 digit images."""

    estimator: Any
    modality: str = "image"
    limits: inputs.InputLimits = field(default_factory=inputs.InputLimits)

    @classmethod
    def from_artifact(cls, artifact: Mapping[str, bytes], *,
                      limits: inputs.InputLimits | None = None) -> DigitsModel:
        # The registry is driftloop's own store: its artifacts are trusted like code.
        return cls(pickle.loads(artifact["model.pkl"]), limits=limits or inputs.InputLimits())

    @classmethod
    def initial_version(cls) -> FirstVersion:
        """Trained on scikit-learn's bundled digits; carries its holdout accuracy."""
        train_set, holdout = split(load_dataset())
        artifact = train(train_set, {})
        return FirstVersion(artifact, evaluate(artifact, holdout),
                            {"dataset": "sklearn.datasets.load_digits", "split": "seed=0",
                             "train_rows": str(len(train_set))})

    @staticmethod
    def sample() -> Sample:
        """Digit 7 of scikit-learn's set as a 64x64 dark-on-light PNG."""
        import numpy as np
        from PIL import Image
        from sklearn.datasets import load_digits

        d = load_digits()
        digit = Image.fromarray((255 - d.data[7].reshape(8, 8) / 16 * 255).astype(np.uint8))
        buf = io.BytesIO()
        digit.resize((64, 64)).save(buf, "PNG")
        return Sample(buf.getvalue(), {"label": int(d.target[7])})

    def predict(self, media: bytes | None, tensor: Any | None) -> dict[str, Any]:
        import numpy as np

        if media is not None:
            x = image_to_features(inputs.decode_image(
                media, mode="L", max_pixels=self.limits.max_image_pixels))
        elif tensor is not None:
            x = np.asarray(tensor, dtype=np.float64)
            if x.ndim == 1:
                x = x.reshape(1, -1)
            if x.ndim == 3 and x.shape[1:] == (8, 8):
                x = x.reshape(x.shape[0], N_FEATURES)
            if x.ndim != 2 or x.shape[1] != N_FEATURES or x.shape[0] == 0:
                raise inputs.bad("input", "shape", f"digits expects [n, 64] or [n, 8, 8] "
                                 f"pixels (0..16), got shape {list(np.shape(tensor))}")
            if not np.all(np.isfinite(x)):
                raise inputs.bad("input", "finite", "pixels must be finite numbers")
        else:
            raise inputs.bad("input", "required", "an image (PNG/JPEG) or [n, 64] pixels")
        return self.classify(x)

    def classify(self, x: Any) -> dict[str, Any]:
        proba = self.estimator.predict_proba(x)
        classes = self.estimator.classes_
        labels = [int(classes[i]) for i in proba.argmax(axis=1)]
        scores = [round(float(s), 4) for s in proba.max(axis=1)]
        out: dict[str, Any] = {"labels": labels, "scores": scores}
        if len(labels) == 1:
            out["label"] = labels[0]
            out["confidence"] = scores[0]
        return out
