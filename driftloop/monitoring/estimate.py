"""Quality estimated before labels arrive: a model's confidence mapped through a calibration.

Labels come late (or never); confidences come with every prediction. A ``Calibration`` maps
one prediction's confidence to its expected quality under the family's metric (accuracy:
the chance it is right; wer/cer: its expected error rate). It is fitted on a labeled
reference window - pairs of (confidence the model gave, quality the label gave it) - by
isotonic regression (pool-adjacent-violators; monotone in the direction the metric says,
never more bins than the data supports) or histogram binning (equal-count bins, the mean
quality per bin). The estimate of a window is the mean of the calibrated confidences of
its predictions: confidence-based performance estimation, written with numpy alone.

It assumes what CBPE assumes: the relation between confidence and quality holds in the
window (covariate shift that leaves it intact). A shift that makes the model confidently
wrong is not seen by it; the realized quality, once labels arrive, is.

Stored beside the version (``models/<model>/<version>/quality_calibration.json``), written
once (create-if-absent), so every replica and every later check use the same mapping.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from driftloop.blob import BlobStore
from driftloop.labeled import latest_per_prediction
from driftloop.registry import Registry

__all__ = [
    "CALIBRATION_FILE",
    "MIN_CALIBRATION_SAMPLES",
    "Calibration",
    "CalibrationError",
    "Estimate",
    "calibration_key",
    "confidence_of",
    "estimate",
    "fit",
    "fit_histogram",
    "fit_isotonic",
    "labeled_pairs",
    "load_calibration",
    "save_calibration",
]

CALIBRATION_FILE = "quality_calibration.json"
MIN_CALIBRATION_SAMPLES = 50
"""Labeled pairs a version's calibration is fitted on at the least (fewer: no estimate)."""

Method = Literal["isotonic", "histogram"]


class CalibrationError(ValueError):
    """The pairs cannot be fitted, or a stored calibration is malformed."""


@dataclass(frozen=True)
class Calibration:
    """A monotone map from confidence to expected quality.

    ``isotonic``: piecewise linear through the knots ``(x[i], y[i])``, flat beyond the ends.
    ``histogram``: bin ``i`` is ``[edges x[i], x[i+1])`` with quality ``y[i]``
    (``len(x) == len(y) + 1``), the outer bins open-ended.
    """

    method: Method
    x: tuple[float, ...]
    y: tuple[float, ...]
    samples: int
    metric: str = "accuracy"

    def __post_init__(self) -> None:
        want = len(self.y) + (1 if self.method == "histogram" else 0)
        if not self.y or len(self.x) != want:
            raise CalibrationError(
                f"{self.method} calibration needs {want} x values for {len(self.y)} y values, "
                f"got {len(self.x)}"
            )
        if not all(math.isfinite(v) for v in (*self.x, *self.y)):
            raise CalibrationError("calibration values must be finite numbers")
        if any(b < a for a, b in zip(self.x, self.x[1:], strict=False)):
            raise CalibrationError("calibration x values must be sorted")

    def predict(self, confidence: Sequence[float] | np.ndarray) -> np.ndarray:
        """Expected quality of each confidence (pure)."""
        c = np.asarray(confidence, dtype=np.float64)
        if self.method == "isotonic":
            return np.interp(c, self.x, self.y)
        inner = np.asarray(self.x[1:-1], dtype=np.float64)
        return np.asarray(self.y, dtype=np.float64)[np.searchsorted(inner, c, side="right")]

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "method": self.method,
                "x": list(self.x),
                "y": list(self.y),
                "samples": self.samples,
                "metric": self.metric,
            }
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Calibration:
        try:
            doc = json.loads(raw)
            method = doc["method"]
            if method not in ("isotonic", "histogram"):
                raise CalibrationError(f"unknown calibration method {method!r}")
            return cls(
                method,
                tuple(float(v) for v in doc["x"]),
                tuple(float(v) for v in doc["y"]),
                int(doc["samples"]),
                str(doc.get("metric") or "accuracy"),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise CalibrationError(f"unreadable calibration: {e}") from e


@dataclass(frozen=True)
class Estimate:
    """Estimated mean quality of one version's predictions in a window."""

    model: str
    version: str
    metric: str
    value: float
    count: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "metric": self.metric,
            "estimated": self.value,
            "count": self.count,
        }


def _pairs(
    scores: Sequence[float] | np.ndarray, quality: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    if s.shape != q.shape or s.ndim != 1:
        raise CalibrationError(f"{s.size} confidences for {q.size} qualities; one each")
    keep = np.isfinite(s) & np.isfinite(q)
    s, q = s[keep], q[keep]
    if s.size == 0:
        raise CalibrationError("no finite (confidence, quality) pair to fit")
    order = np.argsort(s, kind="stable")
    return s[order], q[order]


def fit_isotonic(
    scores: Sequence[float] | np.ndarray,
    quality: Sequence[float] | np.ndarray,
    *,
    increasing: bool = True,
    metric: str = "accuracy",
) -> Calibration:
    """Isotonic regression by pool-adjacent-violators (pure): the monotone step fit with
    the least squared error; knots at each block's mean confidence."""
    s, q = _pairs(scores, quality)
    # ties in confidence are one point (their mean quality, their count as weight)
    xs, start = np.unique(s, return_index=True)
    counts = np.diff(np.append(start, s.size)).astype(np.float64)
    sums = np.add.reduceat(q, start)
    sign = 1.0 if increasing else -1.0
    blocks: list[list[float]] = []  # [weighted sum of y, weight, weighted sum of x]
    for x, w, total in zip(xs, counts, sums, strict=True):
        blocks.append([sign * total, w, x * w])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            y2, w2, x2 = blocks.pop()
            blocks[-1][0] += y2
            blocks[-1][1] += w2
            blocks[-1][2] += x2
    # strict '>' pooling would leave equal neighbours apart; '>=' merges them: fewer knots
    bx = tuple(float(b[2] / b[1]) for b in blocks)
    by = tuple(float(sign * b[0] / b[1]) for b in blocks)
    return Calibration("isotonic", bx, by, int(s.size), metric)


def fit_histogram(
    scores: Sequence[float] | np.ndarray,
    quality: Sequence[float] | np.ndarray,
    *,
    bins: int = 10,
    metric: str = "accuracy",
) -> Calibration:
    """Histogram binning (pure): up to ``bins`` equal-count bins of confidence, each mapped
    to the mean quality of its pairs."""
    if bins < 1:
        raise CalibrationError("bins must be at least 1")
    s, q = _pairs(scores, quality)
    cuts = np.unique(np.quantile(s, np.linspace(0, 1, bins + 1)[1:-1]))
    idx = np.searchsorted(cuts, s, side="right")
    ys: list[float] = []
    right: list[float] = []  # the upper edge of each non-empty bin but the last
    for i in range(len(cuts) + 1):
        mine = idx == i
        if mine.any():  # an empty bin's values (none here) would go to the next bin
            ys.append(float(q[mine].mean()))
            if i < len(cuts):
                right.append(float(cuts[i]))
    edges = (float(s[0]), *right[: len(ys) - 1], float(s[-1]))
    return Calibration("histogram", tuple(edges), tuple(ys), int(s.size), metric)


def fit(
    scores: Sequence[float] | np.ndarray,
    quality: Sequence[float] | np.ndarray,
    *,
    method: Method = "isotonic",
    increasing: bool = True,
    metric: str = "accuracy",
) -> Calibration:
    """A calibration by ``method``; histogram bins are not forced monotone."""
    if method == "histogram":
        return fit_histogram(scores, quality, metric=metric)
    return fit_isotonic(scores, quality, increasing=increasing, metric=metric)


def estimate(
    calibration: Calibration, confidences: Sequence[float] | np.ndarray, *, model: str, version: str
) -> Estimate | None:
    """The window's estimated quality: the mean calibrated confidence (None: no
    confidence to estimate from)."""
    c = np.asarray(confidences, dtype=np.float64)
    c = c[np.isfinite(c)]
    if c.size == 0:
        return None
    value = float(calibration.predict(c).mean())
    return Estimate(model, version, calibration.metric, value, int(c.size))


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def confidence_of(output: Any) -> float | None:
    """A prediction output's ``confidence`` (digits, speech, OCR emit one), if numeric."""
    return _number(output.get("confidence")) if isinstance(output, Mapping) else None


def labeled_pairs(
    records: Iterable[Mapping[str, Any]], *, model: str, version: str, metric: str
) -> tuple[list[float], list[float]]:
    """(confidences, qualities) of one version's labeled records under ``metric``, one
    per prediction (its latest correction), records without a confidence left out."""
    mine = [
        r
        for r in records
        if r.get("model") == model
        and str(r.get("version")) == version
        and r.get("metric") == metric
    ]
    scored = latest_per_prediction(
        mine,
        lambda r: r,
        has=lambda d: (
            _number(d.get("quality")) is not None and confidence_of(d.get("output")) is not None
        ),
    )
    conf = [confidence_of(r.get("output")) for r in scored]
    qual = [_number(r.get("quality")) for r in scored]
    return [c for c in conf if c is not None], [q for q in qual if q is not None]


def calibration_key(model: str, version: str) -> str:
    return f"{Registry.version_prefix(model, version)}/{CALIBRATION_FILE}"


def save_calibration(store: BlobStore, model: str, version: str, calibration: Calibration) -> bool:
    """Store the version's calibration unless one is there (False then: the first wins)."""
    return store.put_if_absent(calibration_key(model, version), calibration.to_json())


def load_calibration(store: BlobStore, model: str, version: str) -> Calibration | None:
    """The version's stored calibration, None when it has none; ``CalibrationError``
    when the stored one is unreadable."""
    try:
        raw = store.get(calibration_key(model, version))
    except KeyError:
        return None
    return Calibration.from_json(raw)
