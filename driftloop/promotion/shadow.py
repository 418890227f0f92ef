"""The shadow stage: the challenger answers mirrored requests that nobody sees.

The model server answers every request with the champion and, after answering, runs the
same input through the challenger in its own thread; that answer is recorded on the
predictions topic as a prediction event with ``shadow: true``, ``shadow_of`` (the
champion's prediction id) and an id of its own (``shadow_id``), so feedback — which names
the champion's prediction id — never joins it: shadow answers stay out of the labeled
records and of user-facing quality. Here the promote function compares them: agreement
with the champion per request, and quality against the feedback truth of the same
request. ``judge_shadow`` is pure and fails closed like the canary's guard.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from driftloop import topics
from driftloop.policy import Policy
from driftloop.settings import Settings

log = logging.getLogger("driftloop.promotion")


def shadow_id(prediction_id: str) -> str:
    """The shadow prediction's own id (printable ASCII like the id it derives from)."""
    return f"{prediction_id[:200]}~shadow"


@dataclass(frozen=True)
class ShadowStats:
    """What the mirrored requests showed."""

    mirrored: int
    compared: int
    agreement: float | None
    labeled: int
    champion_quality: float | None
    shadow_quality: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Two answers agree: the same label when they have one, else the same output."""
    if "label" in a or "label" in b:
        return a.get("label") == b.get("label")
    return dict(a) == dict(b)


def compare(
    model: str,
    champion: Mapping[str, Mapping[str, Any]],
    shadow: Mapping[str, Mapping[str, Any]],
    truth: Mapping[str, Any],
) -> ShadowStats:
    """Figures from outputs by champion prediction id (pure): ``champion`` and ``shadow``
    answers, and the feedback ``truth`` per champion prediction id."""
    from driftloop.quality import score

    both = [pid for pid in shadow if pid in champion]
    agree = sum(_same(champion[pid], shadow[pid]) for pid in both)
    c_scores: list[float] = []
    s_scores: list[float] = []
    for pid in both:
        if pid not in truth:
            continue
        try:
            c, s = score(model, champion[pid], truth[pid]), score(model, shadow[pid], truth[pid])
        except Exception:
            continue  # unscorable truth: the same rule the labeled records apply
        if math.isfinite(c) and math.isfinite(s):
            c_scores.append(c)
            s_scores.append(s)
    n = len(c_scores)
    return ShadowStats(
        len(shadow),
        len(both),
        agree / len(both) if both else None,
        n,
        sum(c_scores) / n if n else None,
        sum(s_scores) / n if n else None,
    )


def observe(settings: Settings, model: str, challenger: str, since_ms: int) -> ShadowStats:
    """Read the mirrored answers, the champion's and the feedback since ``since_ms``."""
    from driftloop.monitoring.window import read_topic

    cap = settings.drift_window_max_records
    preds = read_topic(
        settings, topics.PREDICTIONS, since_ms=since_ms, max_records=cap, model=model
    )
    champion: dict[str, Mapping[str, Any]] = {}
    shadow: dict[str, Mapping[str, Any]] = {}
    for r in preds.records:
        d = r.data
        out = d.get("output")
        if not isinstance(out, Mapping):
            continue
        if d.get("shadow") is True:
            if d.get("version") == challenger and isinstance(d.get("shadow_of"), str):
                shadow[d["shadow_of"]] = out
        else:
            champion[r.event.id] = out
    feedback = read_topic(
        settings, topics.FEEDBACK, since_ms=since_ms, max_records=cap, model=model
    )
    truth = {
        r.data["prediction_id"]: r.data["truth"]
        for r in feedback.records
        if isinstance(r.data.get("prediction_id"), str) and r.data.get("truth") is not None
    }
    return compare(model, champion, shadow, truth)


@dataclass(frozen=True)
class ShadowVerdict:
    verdict: Literal["ok", "rollback", "wait"]
    reason: str
    stats: ShadowStats

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reason": self.reason, "shadow": self.stats.to_dict()}


def judge_shadow(policy: Policy, s: ShadowStats, *, final: bool, expired: bool) -> ShadowVerdict:
    """'ok' at the end of the stage when agreement (and quality, when required) pass;
    'rollback' on a judged failure or, at ``expired``, on evidence still missing."""
    sp = policy.promotion.shadow
    assert sp is not None
    sign = 1.0 if policy.higher_is_better else -1.0
    figures = (
        f"{s.compared} mirrored requests compared ({s.mirrored} shadow answers), "
        f"agreement {s.agreement if s.agreement is not None else float('nan'):.3f} "
        f"(min {sp.min_agreement})"
    )
    if s.labeled and s.shadow_quality is not None and s.champion_quality is not None:
        figures += (
            f"; {policy.metric} shadow {s.shadow_quality:.4f} vs champion "
            f"{s.champion_quality:.4f} on {s.labeled} labeled"
        )
    missing = []
    if s.compared < sp.min_requests:
        missing.append(f"{s.compared} mirrored requests, needs {sp.min_requests}")
    elif s.agreement is not None and s.agreement < sp.min_agreement:
        return ShadowVerdict("rollback", f"shadow failed: {figures}", s)
    if sp.min_labeled:
        if s.labeled < sp.min_labeled:
            missing.append(f"{s.labeled} labeled mirrored requests, needs {sp.min_labeled}")
        elif s.shadow_quality is not None and s.champion_quality is not None:
            drop = sign * (s.champion_quality - s.shadow_quality)
            if drop > sp.max_quality_drop:
                return ShadowVerdict(
                    "rollback",
                    f"shadow failed: quality drop {drop:.4f} > {sp.max_quality_drop}: {figures}",
                    s,
                )
    if missing:
        what = "; ".join(missing)
        if expired:
            return ShadowVerdict("rollback", f"no evidence from the shadow: {what}", s)
        return ShadowVerdict("wait", f"waiting for shadow evidence: {what}", s)
    if final:
        return ShadowVerdict("ok", f"shadow passed: {figures}", s)
    return ShadowVerdict("wait", f"shadowing: {figures}", s)


__all__ = ["ShadowStats", "ShadowVerdict", "compare", "judge_shadow", "observe", "shadow_id"]
