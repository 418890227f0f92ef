"""The offline gate: challenger against champion on the same data, before any traffic.

Gate data is the recent labeled evaluation set the training run stored (when it has at
least ``MIN_RECENT`` rows) and always the base holdout; both artifacts are scored on the
very same rows here, not taken from numbers recorded at different times.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from driftloop.policy import Policy

MIN_RECENT = 20


@dataclass(frozen=True)
class GateResult:
    passed: bool
    metric: str
    on: str
    """Which data decided: 'recent' or 'holdout'."""
    challenger: float
    champion: float
    margin: float
    challenger_holdout: float
    champion_holdout: float
    max_holdout_drop: float
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(policy: Policy, scores: Mapping[str, float], n_recent: int) -> GateResult:
    """Pure verdict from both versions' scores (keys: challenger/champion, recent/holdout)."""
    hib = policy.higher_is_better
    sign = 1.0 if hib else -1.0
    p = policy.promotion
    on = "recent" if n_recent >= MIN_RECENT and math.isfinite(scores.get("challenger_recent",
                                                                          math.nan)) else "holdout"
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


def run_gate(policy: Policy, challenger: Mapping[str, bytes], champion: Mapping[str, bytes],
             holdout: Any, recent: Any, trainer: Any) -> GateResult:
    n_recent = trainer.size(recent)
    scores = {
        "challenger_holdout": trainer.score(challenger, holdout),
        "champion_holdout": trainer.score(champion, holdout),
        "challenger_recent": trainer.score(challenger, recent) if n_recent else math.nan,
        "champion_recent": trainer.score(champion, recent) if n_recent else math.nan,
    }
    return judge(policy, scores, n_recent)
