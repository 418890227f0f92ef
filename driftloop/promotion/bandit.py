"""Thompson sampling over model versions from reward feedback.

Each version's reward (in [0, 1]; feedback ``reward`` or per-record quality) is a
Beta(1 + successes, 1 + failures) posterior; a version's traffic weight is the share of
posterior draws in which it is the best. Pure functions with an explicit random source.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def thompson_weights(stats: Mapping[str, tuple[float, int]], *, draws: int = 4000,
                     floor: float = 0.02, seed: int | None = None) -> dict[str, float]:
    """Weights per version from ``{version: (mean reward, count)}``; each keeps ``floor``."""
    if not stats:
        return {}
    rng = np.random.default_rng(seed)
    versions = sorted(stats)
    samples = np.empty((draws, len(versions)))
    for i, v in enumerate(versions):
        mean, n = stats[v]
        mean = min(max(float(mean), 0.0), 1.0)
        samples[:, i] = rng.beta(1.0 + mean * n, 1.0 + (1.0 - mean) * n, size=draws)
    wins = np.bincount(samples.argmax(axis=1), minlength=len(versions)) / draws
    w = np.maximum(wins, floor)
    w = w / w.sum()
    return {v: round(float(x), 6) for v, x in zip(versions, w, strict=True)}


def best(weights: Mapping[str, float], threshold: float = 0.95) -> str | None:
    """The version that wins with at least ``threshold`` posterior probability, if any."""
    for v, w in weights.items():
        if w >= threshold:
            return v
    return None
