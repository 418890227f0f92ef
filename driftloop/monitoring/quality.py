"""Quality by model and version from labeled records (``driftloop.labeled``).

Labeled records carry the per-record quality the join computed (``metric``, ``quality``)
and the feedback ``reward``; this module only aggregates them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

REWARD = "reward"
UNKNOWN_VERSION = "unknown"


@dataclass(frozen=True)
class QualityStat:
    """Mean of one metric for one model version over a window."""

    model: str
    version: str
    metric: str
    mean: float
    count: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "metric": self.metric,
            "mean": self.mean,
            "count": self.count,
        }


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def aggregate(
    records: Iterable[Mapping[str, Any]], *, model: str | None = None
) -> list[QualityStat]:
    """Mean quality and mean reward per (model, version, metric); non-numeric values skipped."""
    sums: dict[tuple[str, str, str], list[float]] = {}
    for r in records:
        m = r.get("model")
        if not isinstance(m, str) or (model is not None and m != model):
            continue
        version = str(r.get("version") or UNKNOWN_VERSION)
        q = _number(r.get("quality"))
        if q is not None and isinstance(r.get("metric"), str):
            acc = sums.setdefault((m, version, r["metric"]), [0.0, 0])
            acc[0] += q
            acc[1] += 1
        reward = _number(r.get("reward"))
        if reward is not None:
            acc = sums.setdefault((m, version, REWARD), [0.0, 0])
            acc[0] += reward
            acc[1] += 1
    return [QualityStat(m, v, k, s / n, int(n)) for (m, v, k), (s, n) in sorted(sums.items())]


def over_time(
    records: Iterable[tuple[datetime, Mapping[str, Any]]], *, model: str, bucket_s: float = 3600
) -> list[tuple[datetime, QualityStat]]:
    """Quality per time bucket (for reports): ``(bucket start, stat)`` pairs in time order."""
    buckets: dict[float, list[Mapping[str, Any]]] = {}
    tz = None
    for t, r in records:
        tz = t.tzinfo
        start = math.floor(t.timestamp() / bucket_s) * bucket_s
        buckets.setdefault(start, []).append(r)
    out: list[tuple[datetime, QualityStat]] = []
    for start in sorted(buckets):
        for s in aggregate(buckets[start], model=model):
            out.append((datetime.fromtimestamp(start, tz), s))
    return out
