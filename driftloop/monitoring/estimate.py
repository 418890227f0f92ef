"""Quality estimated before labels arrive: a model's confidence mapped through a calibration.

Labels come late (or never); confidences come with every prediction. A ``Calibration`` maps
one prediction's confidence to its expected quality under the family's metric (accuracy:
the chance it is right; wer/cer: its expected error rate). It is fitted on a labeled
reference window - pairs of (confidence the model gave, quality the label gave it) - by
isotonic regression (pool-adjacent-violators; monotone in the direction the metric says,
never more bins than the data supports) or histogram binning (equal-count bins, the mean
quality per bin). Where the reference held few pairs near a confidence - a model right
99 times in 100 leaves the low confidences nearly unlabeled - or none at all, the map
leans on the confidence's own claim (``prior_quality``: the probability of being right,
or 1 - confidence as an error rate), weighed as ``PRIOR_WEIGHT`` pairs against the pairs
found there. The estimate of a window is the mean of the calibrated confidences of its
predictions: confidence-based performance estimation, written with numpy alone.

Measured on the rotated-digits scenario (``bench/quality_estimate.py``).

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
from driftloop.monitoring.quality import finite_number
from driftloop.registry import Registry

__all__ = [
    "CALIBRATION_FILE",
    "MIN_CALIBRATION_SAMPLES",
    "PRIOR_WEIGHT",
    "Calibration",
    "CalibrationError",
    "Estimate",
    "calibration_key",
    "confidence_of",
    "estimate",
    "evidence",
    "fit",
    "fit_histogram",
    "fit_isotonic",
    "labeled_pairs",
    "load_calibration",
    "prior_quality",
    "save_calibration",
]

CALIBRATION_FILE = "quality_calibration.json"
MIN_CALIBRATION_SAMPLES = 50
"""Labeled pairs a version's calibration is fitted on at the least (fewer: no estimate)."""

Method = Literal["isotonic", "histogram"]
Prior = Literal["none", "confidence", "complement"]
PRIOR_WEIGHT = 5.0
"""Pseudo-pairs of the confidence's own claim beside the reference's pairs at each
confidence: where the reference holds few pairs (a thin, low-confidence block), the
estimate follows what the model claims there; where it holds many, what the labels said."""


def prior_quality(prior: Prior, confidence: np.ndarray) -> np.ndarray:
    """What a confidence claims before any label: ``confidence`` (a probability of being
    right: accuracy), ``complement`` (1 - confidence: an expected error rate, wer/cer)."""
    return confidence if prior == "confidence" else 1.0 - confidence


class CalibrationError(ValueError):
    """The pairs cannot be fitted, or a stored calibration is malformed."""


@dataclass(frozen=True)
class Calibration:
    """A map from confidence to expected quality, fitted on labeled pairs.

    ``isotonic``: piecewise linear through the knots ``(x[i], y[i])``; the step fit holds
    over each block's range (knots at both its ends), linear between blocks.
    ``histogram``: bin ``i`` is ``[x[i], x[i+1])`` with quality ``y[i]``
    (``len(x) == len(y) + 1``), the outer bins open-ended.

    ``weights`` are the evidence behind each ``y``: reference pairs within
    ``EVIDENCE_RADIUS`` of the knot (isotonic), or in the bin (histogram). With a
    ``prior``, the value at confidence ``c`` is ``(n·y + k·claim(c)) / (n + k)``, ``n`` the
    pairs there (0 beyond the reference's confidences: the claim alone), ``k`` the
    ``prior_weight``; ``prior`` "none" is the plain fit, flat beyond the ends.
    """

    method: Method
    x: tuple[float, ...]
    y: tuple[float, ...]
    samples: int
    metric: str = "accuracy"
    prior: Prior = "none"
    prior_weight: float = 0.0
    weights: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        want = len(self.y) + (1 if self.method == "histogram" else 0)
        if not self.y or len(self.x) != want:
            raise CalibrationError(
                f"{self.method} calibration needs {want} x values for {len(self.y)} y values, "
                f"got {len(self.x)}"
            )
        if self.weights and len(self.weights) != len(self.y):
            raise CalibrationError("calibration weights must be one per y value")
        values = (*self.x, *self.y, *self.weights, self.prior_weight)
        if not all(math.isfinite(v) for v in values):
            raise CalibrationError("calibration values must be finite numbers")
        if any(b < a for a, b in zip(self.x, self.x[1:], strict=False)):
            raise CalibrationError("calibration x values must be sorted")
        if self.prior_weight < 0 or any(w < 0 for w in self.weights):
            raise CalibrationError("calibration weights must not be negative")

    def predict(self, confidence: Sequence[float] | np.ndarray) -> np.ndarray:
        """Expected quality of each confidence (pure)."""
        c = np.asarray(confidence, dtype=np.float64)
        n: np.ndarray | None = None
        if self.method == "isotonic":
            base = np.interp(c, self.x, self.y)
            if self.weights:
                n = np.interp(c, self.x, self.weights)
        else:
            inner = np.asarray(self.x[1:-1], dtype=np.float64)
            bins = np.searchsorted(inner, c, side="right")
            base = np.asarray(self.y, dtype=np.float64)[bins]
            if self.weights:
                n = np.asarray(self.weights, dtype=np.float64)[bins]
        if self.prior == "none" or self.prior_weight <= 0 or n is None:
            return base
        n = np.where((c < self.x[0]) | (c > self.x[-1]), 0.0, n)
        k = self.prior_weight
        return (n * base + k * prior_quality(self.prior, c)) / (n + k)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "method": self.method,
                "x": list(self.x),
                "y": list(self.y),
                "samples": self.samples,
                "metric": self.metric,
                "prior": self.prior,
                "prior_weight": self.prior_weight,
                "weights": list(self.weights),
            }
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Calibration:
        try:
            doc = json.loads(raw)
            method = doc["method"]
            if method not in ("isotonic", "histogram"):
                raise CalibrationError(f"unknown calibration method {method!r}")
            prior = doc.get("prior", "none")
            if prior not in ("none", "confidence", "complement"):
                raise CalibrationError(f"unknown calibration prior {prior!r}")
            return cls(
                method,
                tuple(float(v) for v in doc["x"]),
                tuple(float(v) for v in doc["y"]),
                int(doc["samples"]),
                str(doc.get("metric") or "accuracy"),
                prior,
                float(doc.get("prior_weight", 0.0)),
                tuple(float(v) for v in doc.get("weights") or ()),
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


KNOT_GRID = 41
EVIDENCE_RADIUS = 0.025
"""The evidence at a confidence: reference pairs within this of it."""


def evidence(sorted_scores: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Reference pairs within ``EVIDENCE_RADIUS`` of each point of ``at`` (pure)."""
    hi = np.searchsorted(sorted_scores, at + EVIDENCE_RADIUS, side="right")
    lo = np.searchsorted(sorted_scores, at - EVIDENCE_RADIUS, side="left")
    return (hi - lo).astype(np.float64)


def _pav(blocks: list[list[float]]) -> list[list[float]]:
    """Pool adjacent violators of ``[sum of y, weight, lowest x, highest x]`` blocks in x
    order, so the mean y never falls; equal neighbours merge too (fewer knots, same fit)."""
    out: list[list[float]] = []
    for b in blocks:
        out.append(list(b))
        while len(out) > 1 and out[-2][0] / out[-2][1] >= out[-1][0] / out[-1][1]:
            y2, w2, _, hi = out.pop()
            out[-1][0] += y2
            out[-1][1] += w2
            out[-1][3] = hi
    return out


def fit_isotonic(
    scores: Sequence[float] | np.ndarray,
    quality: Sequence[float] | np.ndarray,
    *,
    increasing: bool = True,
    metric: str = "accuracy",
    prior: Prior = "none",
    prior_weight: float = PRIOR_WEIGHT,
) -> Calibration:
    """Isotonic regression by pool-adjacent-violators (pure): the monotone step fit with
    the least squared error (as scikit-learn's ``IsotonicRegression``)."""
    s, q = _pairs(scores, quality)
    # ties in confidence are one point (their mean quality, their count as weight)
    xs, start = np.unique(s, return_index=True)
    counts = np.diff(np.append(start, s.size)).astype(np.float64)
    sums = np.add.reduceat(q, start)
    sign = 1.0 if increasing else -1.0
    blocks = _pav([[sign * total, w, x, x] for x, w, total in zip(xs, counts, sums, strict=True)])
    bx: list[float] = []
    by: list[float] = []
    for y_sum, w, lo, hi in blocks:
        for x in (lo, hi) if hi > lo else (lo,):
            bx.append(float(x))
            by.append(float(sign * y_sum / w))
    # more knots on a grid (the same function: flat in a block, linear between), so the
    # evidence at each confidence is told apart inside a wide block
    grid = np.linspace(bx[0], bx[-1], KNOT_GRID)
    kx = np.unique(np.concatenate([np.asarray(bx), grid]))
    ky = np.interp(kx, bx, by)
    bw = evidence(s, kx)
    bx, by = [float(v) for v in kx], [float(v) for v in ky]
    return Calibration(
        "isotonic",
        tuple(bx),
        tuple(by),
        int(s.size),
        metric,
        prior,
        prior_weight if prior != "none" else 0.0,
        tuple(float(v) for v in bw),
    )


def fit_histogram(
    scores: Sequence[float] | np.ndarray,
    quality: Sequence[float] | np.ndarray,
    *,
    bins: int = 10,
    metric: str = "accuracy",
    prior: Prior = "none",
    prior_weight: float = PRIOR_WEIGHT,
) -> Calibration:
    """Histogram binning (pure): up to ``bins`` equal-count bins of confidence, each mapped
    to the mean quality of its pairs (not forced monotone)."""
    if bins < 1:
        raise CalibrationError("bins must be at least 1")
    s, q = _pairs(scores, quality)
    cuts = np.unique(np.quantile(s, np.linspace(0, 1, bins + 1)[1:-1]))
    idx = np.searchsorted(cuts, s, side="right")
    ys: list[float] = []
    ns: list[float] = []
    right: list[float] = []  # the upper edge of each non-empty bin but the last
    for i in range(len(cuts) + 1):
        mine = idx == i
        if mine.any():  # an empty bin's values (none here) would go to the next bin
            ys.append(float(q[mine].mean()))
            ns.append(float(mine.sum()))
            if i < len(cuts):
                right.append(float(cuts[i]))
    edges = (float(s[0]), *right[: len(ys) - 1], float(s[-1]))
    return Calibration(
        "histogram",
        tuple(edges),
        tuple(ys),
        int(s.size),
        metric,
        prior,
        prior_weight if prior != "none" else 0.0,
        tuple(ns),
    )


def fit(
    scores: Sequence[float] | np.ndarray,
    quality: Sequence[float] | np.ndarray,
    *,
    method: Method = "isotonic",
    increasing: bool = True,
    metric: str = "accuracy",
    prior_weight: float = PRIOR_WEIGHT,
) -> Calibration:
    """The calibration drift-check fits: by ``method``, with the confidence's own claim as
    prior (a probability of being right for higher-is-better metrics, 1 - confidence as
    an error rate otherwise)."""
    prior: Prior = "confidence" if increasing else "complement"
    if method == "histogram":
        return fit_histogram(scores, quality, metric=metric, prior=prior, prior_weight=prior_weight)
    return fit_isotonic(
        scores,
        quality,
        increasing=increasing,
        metric=metric,
        prior=prior,
        prior_weight=prior_weight,
    )


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


def confidence_of(output: Any) -> float | None:
    """A prediction output's ``confidence`` (digits, speech, OCR emit one), if numeric."""
    return finite_number(output.get("confidence")) if isinstance(output, Mapping) else None


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
        and r.get("shadow") is not True  # nobody was served a shadow answer
    ]
    scored = latest_per_prediction(
        mine,
        lambda r: r,
        has=lambda d: (
            finite_number(d.get("quality")) is not None
            and confidence_of(d.get("output")) is not None
        ),
    )
    conf = [confidence_of(r.get("output")) for r in scored]
    qual = [finite_number(r.get("quality")) for r in scored]
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
