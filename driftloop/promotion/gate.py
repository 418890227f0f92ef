"""The offline gate: challenger against champion on the same data, before any traffic.

Gate data is the recent labeled evaluation set the training run stored (when it has at
least ``MIN_RECENT`` rows) and always the base holdout; both artifacts are scored on the
very same rows here, not taken from numbers recorded at different times. A champion that
is missing or unreadable is a stated outcome: the challenger is judged on its own
absolute checks (``judge_alone``) instead of failing the gate with an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from driftloop.errors import Unavailable
from driftloop.policy import Policy

if TYPE_CHECKING:
    from driftloop.retrain.trainers import Trainer

MIN_RECENT = 20


@dataclass(frozen=True)
class GateResult:
    passed: bool
    metric: str
    on: str
    """Which data decided: 'recent' or 'holdout'."""
    challenger: float
    champion: float | None
    margin: float
    challenger_holdout: float
    champion_holdout: float | None
    max_holdout_drop: float
    detail: str
    champion_problem: str | None = None
    """Set when the champion could not be scored: the challenger was judged on its own."""

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()}


def _on(scores: Mapping[str, float], n_recent: int) -> str:
    recent = scores.get("challenger_recent", math.nan)
    return "recent" if n_recent >= MIN_RECENT and math.isfinite(recent) else "holdout"


def judge(policy: Policy, scores: Mapping[str, float], n_recent: int) -> GateResult:
    """Pure verdict from both versions' scores (keys: challenger/champion, recent/holdout)."""
    hib = policy.higher_is_better
    sign = 1.0 if hib else -1.0
    p = policy.promotion
    on = _on(scores, n_recent)
    ch, cp = scores[f"challenger_{on}"], scores[f"champion_{on}"]
    ch_h, cp_h = scores["challenger_holdout"], scores["champion_holdout"]
    gain = sign * (ch - cp)
    drop = sign * (cp_h - ch_h)
    beats = gain >= p.margin
    keeps = drop <= p.max_holdout_drop
    detail = (f"{policy.metric} on {on} data: challenger {ch:.4f} vs champion {cp:.4f} "
              f"(gain {gain:+.4f}, needs >= {p.margin}); holdout {ch_h:.4f} vs {cp_h:.4f} "
              f"(drop {drop:+.4f}, allowed <= {p.max_holdout_drop})")
    return GateResult(beats and keeps, policy.metric, on, ch, cp, p.margin, ch_h, cp_h,
                      p.max_holdout_drop, detail)


def judge_alone(policy: Policy, scores: Mapping[str, float], n_recent: int,
                problem: str) -> GateResult:
    """The challenger's own absolute checks, for when the champion cannot be scored.

    Its score on the gate data and on the holdout must both be finite and meet the
    policy's quality threshold (the level at which the policy would retrain at once); a
    policy without a quality rule has no absolute bar, so the challenger is refused.
    """
    p = policy.promotion
    on = _on(scores, n_recent)
    ch, ch_h = scores[f"challenger_{on}"], scores["challenger_holdout"]
    rule = policy.triggers.quality

    def fail(why: str) -> GateResult:
        return GateResult(False, policy.metric, on, ch, None, p.margin, ch_h, None,
                          p.max_holdout_drop, f"{problem}; {why}", problem)

    if rule is None:
        return fail("the policy sets no quality threshold to judge the challenger alone")
    t = rule.threshold

    def meets(x: float) -> bool:
        return math.isfinite(x) and (x >= t if policy.higher_is_better else x <= t)

    cmp = ">=" if policy.higher_is_better else "<="
    detail = (f"challenger judged alone: {policy.metric} on {on} data {ch:.4f}, holdout "
              f"{ch_h:.4f} (each must be {cmp} {t})")
    if not (meets(ch) and meets(ch_h)):
        return fail(detail)
    return GateResult(True, policy.metric, on, ch, None, p.margin, ch_h, None,
                      p.max_holdout_drop, f"{problem}; {detail}", problem)


def _problem(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:300]


def run_gate(policy: Policy, challenger: Mapping[str, bytes] | None,
             champion: Mapping[str, bytes] | None, holdout: Any, recent: Any, trainer: Trainer,
             *, champion_problem: str | None = None,
             challenger_problem: str | None = None) -> GateResult:
    """Score both artifacts on the same rows. An artifact that is missing (``None`` with
    its problem) or cannot be scored is a stated outcome, never an error: a broken
    challenger is rejected; a broken champion leaves the challenger to its own checks.
    A blob store that is unreachable (``Unavailable``) is an error: retry later."""
    n_recent = trainer.size(recent)
    scores: dict[str, float] = {}
    try:
        if challenger is None:
            raise LookupError(challenger_problem or "no artifact")
        scores["challenger_holdout"] = trainer.score(challenger, holdout)
        scores["challenger_recent"] = trainer.score(challenger, recent) if n_recent else math.nan
    except Unavailable:
        raise
    except Exception as e:
        why = challenger_problem or f"challenger cannot be scored: {_problem(e)}"
        return GateResult(False, policy.metric, "holdout", math.nan, None, policy.promotion.margin,
                          math.nan, None, policy.promotion.max_holdout_drop, why)
    if champion is not None and champion_problem is None:
        try:
            scores["champion_holdout"] = trainer.score(champion, holdout)
            scores["champion_recent"] = trainer.score(champion, recent) if n_recent else math.nan
        except Unavailable:
            raise
        except Exception as e:
            champion_problem = f"champion cannot be scored ({_problem(e)})"
    if champion is None or champion_problem is not None:
        return judge_alone(policy, scores, n_recent,
                           champion_problem or "champion artifact missing")
    return judge(policy, scores, n_recent)
