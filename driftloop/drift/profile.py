"""Reference profiles and mergeable window summaries.

A :class:`ReferenceProfile` is computed once from training data (or a chosen window)
and stored beside the model version. It holds, per numeric feature, the sorted
reference sample (capped at ``max_sample`` values so the stored object stays small),
quantile bin edges for PSI and a finer quantile grid for streaming summaries; per
categorical feature, the category counts.

A :class:`WindowSummary` is the bounded-memory form of a current window: per numeric
feature, counts over the profile's fixed grid plus moments; per categorical feature,
category counts (capped). Summaries update from batches and merge by adding counts,
so a stream can be summarised incrementally and in parallel.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from driftloop.drift.stats import bin_counts, bin_counts_sorted

F64 = NDArray[np.float64]
Kind = Literal["numeric", "categorical"]

PROFILE_VERSION = 1
DEFAULT_PSI_BINS = 10
DEFAULT_GRID = 200  # a multiple of DEFAULT_PSI_BINS: PSI edges are a subset of the grid
DEFAULT_MAX_SAMPLE = 100_000
DEFAULT_MAX_CATEGORIES = 1_000
OTHER = "__other__"


class DriftInputError(ValueError):
    """A window or reference that cannot be checked (empty, NaN, unknown feature)."""

    def __init__(self, message: str, *, feature: str | None = None, rule: str = "invalid") -> None:
        super().__init__(message)
        self.feature = feature
        self.rule = rule


def infer_kind(values: ArrayLike) -> Kind:
    """Numbers (not booleans) are numeric; strings, booleans and objects are categorical."""
    arr = np.asarray(values)
    return "numeric" if arr.dtype.kind in "iuf" else "categorical"


def numeric_values(name: str, values: ArrayLike, *, nan_policy: str = "raise") -> F64:
    """The finite float64 values of a numeric column; NaN/inf raise or are dropped."""
    try:
        arr = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as e:
        raise DriftInputError(f"feature {name!r} is not numeric", feature=name, rule="type") from e
    finite = np.isfinite(arr)
    if not finite.all():
        if nan_policy != "omit":
            bad = int((~finite).sum())
            raise DriftInputError(
                f"feature {name!r} has {bad} NaN or infinite values", feature=name, rule="finite"
            )
        arr = arr[finite]
    return arr


def category_labels(values: ArrayLike) -> NDArray[np.str_]:
    """Categories as strings (None becomes the label ``"None"``), so counts serialise as JSON."""
    return np.asarray([str(v) for v in np.asarray(values, dtype=object).ravel()], dtype=np.str_)


def _b64(a: F64) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f8").tobytes()).decode("ascii")


def _unb64(s: str) -> F64:
    return np.frombuffer(base64.b64decode(s), dtype="<f8").astype(np.float64)


@dataclass(frozen=True, eq=False)
class NumericProfile:
    """The reference side of one numeric feature."""

    n: int
    mean: float
    std: float
    min: float
    max: float
    sample: F64
    """Sorted reference values (all of them, or an even random subsample of ``max_sample``)."""
    psi_edges: F64
    psi_fractions: F64
    grid_edges: F64
    grid_cdf: F64
    """Reference ECDF at each grid edge (for summaries)."""
    sampled: bool = False
    kind: Kind = "numeric"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "numeric",
            "n": self.n,
            "mean": self.mean,
            "std": self.std,
            "min": self.min,
            "max": self.max,
            "sampled": self.sampled,
            "sample_f64_b64": _b64(self.sample),
            "psi_edges": self.psi_edges.tolist(),
            "psi_fractions": self.psi_fractions.tolist(),
            "grid_edges": self.grid_edges.tolist(),
            "grid_cdf": self.grid_cdf.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NumericProfile:
        return cls(
            n=int(d["n"]),
            mean=float(d["mean"]),
            std=float(d["std"]),
            min=float(d["min"]),
            max=float(d["max"]),
            sample=_unb64(d["sample_f64_b64"]),
            psi_edges=np.asarray(d["psi_edges"], dtype=np.float64),
            psi_fractions=np.asarray(d["psi_fractions"], dtype=np.float64),
            grid_edges=np.asarray(d["grid_edges"], dtype=np.float64),
            grid_cdf=np.asarray(d["grid_cdf"], dtype=np.float64),
            sampled=bool(d["sampled"]),
        )


@dataclass(frozen=True)
class CategoricalProfile:
    """The reference side of one categorical feature."""

    n: int
    counts: Mapping[str, int]
    kind: Kind = "categorical"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "categorical", "n": self.n, "counts": dict(self.counts)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CategoricalProfile:
        return cls(n=int(d["n"]), counts={str(k): int(v) for k, v in d["counts"].items()})


FeatureProfile = NumericProfile | CategoricalProfile


def numeric_profile(
    values: F64,
    *,
    psi_bins: int = DEFAULT_PSI_BINS,
    grid: int = DEFAULT_GRID,
    max_sample: int | None = DEFAULT_MAX_SAMPLE,
    seed: int = 0,
) -> NumericProfile:
    """Profile of one numeric reference column (finite values only)."""
    if values.size == 0:
        raise DriftInputError("reference column is empty", rule="empty")
    if grid % psi_bins:
        raise ValueError("grid must be a multiple of psi_bins so PSI edges lie on the grid")
    full = np.sort(values)
    q = np.linspace(0.0, 1.0, grid + 1)[1:-1]
    grid_edges = np.quantile(full, q)
    psi_edges = grid_edges[grid // psi_bins - 1 :: grid // psi_bins]
    psi_fractions = bin_counts_sorted(full, psi_edges) / full.size
    grid_cdf = np.searchsorted(full, grid_edges, side="right") / full.size
    sample, sampled = full, False
    if max_sample is not None and full.size > max_sample:
        pick = np.random.default_rng(seed).choice(full.size, size=max_sample, replace=False)
        sample, sampled = np.sort(full[pick]), True
    return NumericProfile(
        n=int(full.size),
        mean=float(full.mean()),
        std=float(full.std()),
        min=float(full[0]),
        max=float(full[-1]),
        sample=sample,
        psi_edges=psi_edges,
        psi_fractions=psi_fractions,
        grid_edges=grid_edges,
        grid_cdf=grid_cdf,
        sampled=sampled,
    )


def categorical_profile(values: ArrayLike) -> CategoricalProfile:
    labels = category_labels(values)
    if labels.size == 0:
        raise DriftInputError("reference column is empty", rule="empty")
    cats, counts = np.unique(labels, return_counts=True)
    return CategoricalProfile(
        n=int(labels.size), counts=dict(zip(cats.tolist(), counts.tolist(), strict=True))
    )


@dataclass(frozen=True)
class ReferenceProfile:
    """Per-feature reference summaries, serialisable as JSON beside a model version."""

    features: Mapping[str, FeatureProfile]
    rows: int
    created: str
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile_version": PROFILE_VERSION,
            "rows": self.rows,
            "created": self.created,
            "source": self.source,
            "features": {k: v.to_dict() for k, v in self.features.items()},
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReferenceProfile:
        if int(d.get("profile_version", 0)) != PROFILE_VERSION:
            raise DriftInputError(f"unsupported profile_version {d.get('profile_version')!r}")
        feats: dict[str, FeatureProfile] = {}
        for name, f in d["features"].items():
            feats[name] = (
                NumericProfile.from_dict(f)
                if f["kind"] == "numeric"
                else CategoricalProfile.from_dict(f)
            )
        return cls(
            features=feats,
            rows=int(d["rows"]),
            created=str(d["created"]),
            source=str(d.get("source", "")),
        )

    @classmethod
    def from_json(cls, data: bytes) -> ReferenceProfile:
        try:
            return cls.from_dict(json.loads(data))
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, DriftInputError):
                raise
            raise DriftInputError(f"not a reference profile: {e}") from e


def build_profile(
    columns: Mapping[str, ArrayLike],
    *,
    kinds: Mapping[str, Kind] | None = None,
    psi_bins: int = DEFAULT_PSI_BINS,
    grid: int = DEFAULT_GRID,
    max_sample: int | None = DEFAULT_MAX_SAMPLE,
    nan_policy: str = "raise",
    source: str = "",
) -> ReferenceProfile:
    """Profile every column; kinds are inferred from dtypes unless given."""
    if not columns:
        raise DriftInputError("reference has no features", rule="empty")
    feats: dict[str, FeatureProfile] = {}
    rows = 0
    for name, values in columns.items():
        kind = (kinds or {}).get(name) or infer_kind(values)
        if kind == "numeric":
            vals = numeric_values(name, values, nan_policy=nan_policy)
            try:
                feats[name] = numeric_profile(
                    vals, psi_bins=psi_bins, grid=grid, max_sample=max_sample
                )
            except DriftInputError as e:
                raise DriftInputError(f"feature {name!r}: {e}", feature=name, rule=e.rule) from e
        else:
            feats[name] = categorical_profile(values)
        rows = max(rows, feats[name].n)
    created = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return ReferenceProfile(features=feats, rows=rows, created=created, source=source)


# ---------------------------------------------------------------- summaries


@dataclass
class NumericSketch:
    """Counts over fixed reference-grid bins plus moments: O(grid) memory, mergeable."""

    edges: F64
    counts: NDArray[np.int64]
    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    min: float = math.inf
    max: float = -math.inf

    @classmethod
    def empty(cls, edges: F64) -> NumericSketch:
        return cls(edges=edges, counts=np.zeros(edges.size + 1, dtype=np.int64))

    def update(self, values: F64) -> None:
        if values.size == 0:
            return
        self.counts += bin_counts(values, self.edges)
        self.n += int(values.size)
        self.total += float(values.sum())
        self.total_sq += float(np.dot(values, values))
        self.min = min(self.min, float(values.min()))
        self.max = max(self.max, float(values.max()))

    def merge(self, other: NumericSketch) -> NumericSketch:
        if self.edges.shape != other.edges.shape or not np.array_equal(self.edges, other.edges):
            raise ValueError("sketches over different grids cannot be merged")
        return NumericSketch(
            edges=self.edges,
            counts=self.counts + other.counts,
            n=self.n + other.n,
            total=self.total + other.total,
            total_sq=self.total_sq + other.total_sq,
            min=min(self.min, other.min),
            max=max(self.max, other.max),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "numeric",
            "counts": self.counts.tolist(),
            "n": self.n,
            "total": self.total,
            "total_sq": self.total_sq,
            "min": self.min if self.n else None,
            "max": self.max if self.n else None,
        }


@dataclass
class CategoricalSketch:
    """Category counts; past ``max_categories`` distinct labels, new ones count as ``__other__``."""

    counts: dict[str, int] = field(default_factory=dict)
    max_categories: int = DEFAULT_MAX_CATEGORIES

    @property
    def n(self) -> int:
        return sum(self.counts.values())

    def _add(self, label: str, k: int) -> None:
        if label not in self.counts and len(self.counts) >= self.max_categories:
            label = OTHER
        self.counts[label] = self.counts.get(label, 0) + k

    def update(self, values: ArrayLike) -> None:
        labels = category_labels(values)
        if labels.size == 0:
            return
        cats, counts = np.unique(labels, return_counts=True)
        for c, k in zip(cats.tolist(), counts.tolist(), strict=True):
            self._add(c, int(k))

    def merge(self, other: CategoricalSketch) -> CategoricalSketch:
        out = CategoricalSketch(dict(self.counts), self.max_categories)
        for c, k in other.counts.items():
            out._add(c, k)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "categorical", "counts": dict(self.counts)}


Sketch = NumericSketch | CategoricalSketch


@dataclass
class WindowSummary:
    """A current window summarised against one reference profile (bounded memory)."""

    sketches: dict[str, Sketch]

    @classmethod
    def empty(cls, profile: ReferenceProfile) -> WindowSummary:
        sk: dict[str, Sketch] = {}
        for name, f in profile.features.items():
            sk[name] = (
                NumericSketch.empty(f.grid_edges)
                if isinstance(f, NumericProfile)
                else CategoricalSketch()
            )
        return cls(sk)

    def update(self, columns: Mapping[str, ArrayLike], *, nan_policy: str = "raise") -> None:
        """Add a batch of rows (columns by feature name; missing features are an error)."""
        missing = [k for k in self.sketches if k not in columns]
        if missing:
            raise DriftInputError(
                f"batch lacks features {missing}", feature=missing[0], rule="missing"
            )
        for name, sk in self.sketches.items():
            if isinstance(sk, NumericSketch):
                sk.update(numeric_values(name, columns[name], nan_policy=nan_policy))
            else:
                sk.update(columns[name])

    def merge(self, other: WindowSummary) -> WindowSummary:
        if set(self.sketches) != set(other.sketches):
            raise ValueError("summaries over different features cannot be merged")
        return WindowSummary({k: _merge(v, other.sketches[k]) for k, v in self.sketches.items()})

    @property
    def rows(self) -> int:
        return max((s.n for s in self.sketches.values()), default=0)

    def to_dict(self) -> dict[str, Any]:
        return {k: v.to_dict() for k, v in self.sketches.items()}


def _merge(a: Sketch, b: Sketch) -> Sketch:
    if isinstance(a, NumericSketch) and isinstance(b, NumericSketch):
        return a.merge(b)
    if isinstance(a, CategoricalSketch) and isinstance(b, CategoricalSketch):
        return a.merge(b)
    raise ValueError("cannot merge a numeric and a categorical sketch")


def summarize(
    profile: ReferenceProfile, batches: Iterable[Mapping[str, ArrayLike]]
) -> WindowSummary:
    """Summary of a stream of batches against ``profile``."""
    summary = WindowSummary.empty(profile)
    for batch in batches:
        summary.update(batch)
    return summary
