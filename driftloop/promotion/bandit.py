"""Thompson sampling over model versions from their rewards (pure).

Each version is an ``Arm``: how many rewards it earned, their sum and sum of squares.
Binary rewards (0/1; a fraction counts as that share of a success) give a
Beta(1 + successes, 1 + failures) posterior of the success rate; continuous rewards a
Normal posterior of the mean reward, N(mean, var / n) with the sample variance (a wide
prior until an arm has two rewards). A version's traffic weight is the share of joint
posterior draws in which it is the best, raised to a ``floor`` so every arm keeps being
explored; the same share is its posterior probability of being best, which ``decide``
compares with the promotion threshold. Every function takes an explicit random seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np

RewardKind = Literal["binary", "continuous"]


@dataclass(frozen=True)
class Arm:
    """The rewards one version earned."""

    n: int = 0
    total: float = 0.0
    squares: float = 0.0

    def add(self, reward: float) -> Arm:
        return Arm(self.n + 1, self.total + reward, self.squares + reward * reward)

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    @property
    def variance(self) -> float | None:
        """The sample variance (n - 1 in the denominator); None below two rewards."""
        if self.n < 2:
            return None
        return max((self.squares - self.total * self.total / self.n) / (self.n - 1), 0.0)

    def to_dict(self) -> dict[str, float]:
        return {"n": self.n, "total": self.total, "squares": self.squares}

    @classmethod
    def from_dict(cls, d: Mapping[str, float]) -> Arm:
        return cls(int(d.get("n", 0)), float(d.get("total", 0.0)), float(d.get("squares", 0.0)))


def sample(arm: Arm, kind: RewardKind, draws: int, rng: np.random.Generator) -> np.ndarray:
    """``draws`` samples of the arm's posterior mean reward."""
    if kind == "binary":
        successes = min(max(arm.total, 0.0), float(arm.n))
        return rng.beta(1.0 + successes, 1.0 + arm.n - successes, size=draws)
    if arm.n == 0:
        return rng.normal(0.0, 1e6, size=draws)  # nothing known: any arm may be best
    var = arm.variance
    # One reward says little: a unit-variance guess until the sample variance exists.
    sd = math.sqrt((var if var is not None and var > 0 else 1.0) / arm.n)
    return rng.normal(arm.total / arm.n, sd, size=draws)


def prob_best(
    arms: Mapping[str, Arm],
    kind: RewardKind = "binary",
    *,
    draws: int = 4000,
    seed: int | None = None,
) -> dict[str, float]:
    """Each version's posterior probability of earning the highest mean reward."""
    if not arms:
        return {}
    import numpy as np  # here, not at import: promote's first answer rarely samples

    rng = np.random.default_rng(seed)
    versions = sorted(arms)
    samples = np.column_stack([sample(arms[v], kind, draws, rng) for v in versions])
    wins = np.bincount(samples.argmax(axis=1), minlength=len(versions)) / draws
    return {v: float(w) for v, w in zip(versions, wins, strict=True)}


def weights(p_best: Mapping[str, float], floor: float) -> dict[str, float]:
    """Traffic weights from the probabilities of being best: each at least ``floor``
    (exploration), the rest shared in proportion; they sum to 1."""
    if not p_best:
        return {}
    n = len(p_best)
    floor = min(max(floor, 0.0), 1.0 / n)
    free = 1.0 - floor * n
    total = sum(p_best.values())
    return {
        v: round(floor + free * (p / total if total > 0 else 1.0 / n), 6)
        for v, p in sorted(p_best.items())
    }


def thompson_weights(
    arms: Mapping[str, Arm],
    kind: RewardKind = "binary",
    *,
    draws: int = 4000,
    floor: float = 0.05,
    seed: int | None = None,
) -> dict[str, float]:
    """Traffic weights per version: Thompson sampling with an exploration floor."""
    return weights(prob_best(arms, kind, draws=draws, seed=seed), floor)


@dataclass(frozen=True)
class Decision:
    """Whether one version won, and the figures the decision rests on."""

    winner: str | None
    p_best: Mapping[str, float]
    arms: Mapping[str, Arm]
    threshold: float
    min_rewards: int

    def explain(self) -> str:
        figures = "; ".join(
            f"v{v}: P(best) {self.p_best.get(v, 0.0):.3f}, mean reward "
            f"{a.mean if a.mean is not None else float('nan'):.3f} over {a.n}"
            for v, a in sorted(self.arms.items())
        )
        if self.winner is None:
            return (
                f"no winner yet (threshold P(best) > {self.threshold}, at least "
                f"{self.min_rewards} rewards per version): {figures}"
            )
        return (
            f"v{self.winner} is best with P(best) {self.p_best[self.winner]:.3f} > "
            f"{self.threshold}: {figures}"
        )


def decide(
    arms: Mapping[str, Arm], p_best: Mapping[str, float], *, threshold: float, min_rewards: int
) -> Decision:
    """The version whose probability of being best exceeds ``threshold``, once every
    version has at least ``min_rewards`` rewards; else no winner."""
    winner = None
    if arms and all(a.n >= min_rewards for a in arms.values()):
        for v, p in sorted(p_best.items()):
            if p > threshold:
                winner = v
    return Decision(winner, dict(p_best), dict(arms), threshold, min_rewards)


__all__ = [
    "Arm",
    "Decision",
    "RewardKind",
    "decide",
    "prob_best",
    "sample",
    "thompson_weights",
    "weights",
]
