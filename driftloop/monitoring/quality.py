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

from driftloop.labeled import latest_per_prediction

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


def finite_number(v: Any) -> float | None:
    """A JSON number as a float; None for anything else (booleans, NaN, infinities)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def aggregate(
    records: Iterable[Mapping[str, Any]], *, model: str | None = None
) -> list[QualityStat]:
    """Mean quality and mean reward per (model, version, metric); non-numeric values skipped.

    A prediction counts once: of its corrections the latest wins (``driftloop.labeled``).
    A shadow answer (``shadow: true``) never counts: nobody was served it.
    """
    sums: dict[tuple[str, str, str], list[float]] = {}
    mine = [r for r in records if isinstance(r.get("model"), str)
            and (model is None or r.get("model") == model) and r.get("shadow") is not True]
    scored = latest_per_prediction(mine, lambda r: r, has=lambda d: (
        finite_number(d.get("quality")) is not None and isinstance(d.get("metric"), str)))
    rewarded = latest_per_prediction(mine, lambda r: r,
                                     has=lambda d: finite_number(d.get("reward")) is not None)
    for r in scored:
        m, version = str(r["model"]), str(r.get("version") or UNKNOWN_VERSION)
        acc = sums.setdefault((m, version, r["metric"]), [0.0, 0])
        acc[0] += float(r["quality"])
        acc[1] += 1
    for r in rewarded:
        m, version = str(r["model"]), str(r.get("version") or UNKNOWN_VERSION)
        reward = finite_number(r.get("reward"))
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
