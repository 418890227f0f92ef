"""Quality estimated before labels, beside the realized one, for the demo's loop.

drift-check estimates a version's accuracy from the confidences its answers carry (its
stored calibration, ``driftloop.monitoring.estimate``); the app knows the truth of the
demo's traffic. These put the two side by side per window of the loop's traffic, through
drift-check's own ``estimates`` (nothing re-estimated here).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from driftloop.blob import BlobStore
from driftloop.demo.traffic import TrafficResult
from driftloop.settings import Settings

__all__ = ["beside", "checked_beside", "estimated", "merged", "realized"]


def estimated(
    settings: Settings, store: BlobStore, version: str, batches: dict[str, TrafficResult]
) -> dict[str, dict[str, float]]:
    """drift-check's estimated accuracy per version of each batch: its ``estimates`` over
    the confidences the answers carried, through the versions' stored calibrations (none
    stored: no figure, never another version's)."""
    from driftloop.monitoring.check import DriftCheckService
    from driftloop.monitoring.check_input import Window
    from driftloop.monitoring.estimate import confidence_of

    check = DriftCheckService(settings, store=store)
    try:
        out: dict[str, dict[str, float]] = {}
        for name, batch in batches.items():
            conf: dict[str, list[float]] = {}
            for p in batch.predictions:
                c = confidence_of(dict(p.output))
                if c is not None:
                    conf.setdefault(str(p.version), []).append(c)
            window = Window({}, [], {}, confidences=conf)
            found = check.estimates("digits", version, window, fit_missing=False)
            out[name] = {e.version: e.value for e in found}
        return out
    finally:
        check.close()


def realized(batches: dict[str, TrafficResult]) -> dict[str, dict[str, float]]:
    """The accuracy per version the app measured from the truth, per batch."""
    return {k: {v: acc for v, (acc, _) in b.by_version.items()} for k, b in batches.items()}


def merged(batches: list[TrafficResult]) -> TrafficResult:
    """One result of several batches: accuracy per version over all their answers."""
    hits: dict[str, tuple[float, int]] = {}
    for b in batches:
        for v, (acc, n) in b.by_version.items():
            s, m = hits.get(v, (0.0, 0))
            hits[v] = (s + acc * n, m + n)
    by_version = {v: (s / n, n) for v, (s, n) in hits.items()}
    total = sum(n for _, n in by_version.values())
    accuracy = sum(a * n for a, n in by_version.values()) / max(total, 1)
    return TrafficResult(accuracy, by_version, [p for b in batches for p in b.predictions])


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def beside(realized: Mapping[str, float], estimated: Mapping[str, float]) -> str:
    """One window's realized and estimated accuracy per version, side by side."""
    return "; ".join(
        f"v{v}: realized {_fmt(realized.get(v))}, estimated {_fmt(estimated.get(v))}"
        for v in sorted(set(realized) | set(estimated))
    )


def checked_beside(checked: dict[str, Any]) -> str:
    """drift-check's answer: realized (labeled) and estimated quality per version."""
    realized = {str(q.get("version")): q for q in checked.get("quality", [])}
    estimated = {str(e.get("version")): e for e in checked.get("quality_estimated", [])}
    parts = []
    for v in sorted(set(realized) | set(estimated)):
        r, e = realized.get(v, {}), estimated.get(v, {})
        parts.append(
            f"v{v}: realized {_fmt(r.get('mean'))} over {r.get('count', 0)} labels, "
            f"estimated {_fmt(e.get('estimated'))} over {e.get('count', 0)} predictions"
        )
    return "; ".join(parts) or "-"
