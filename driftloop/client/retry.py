"""When to try again: 503 and transport errors are retried until a deadline; ``Retry-After``
is honoured (never sooner than the server asked), otherwise capped exponential backoff
with jitter. Pure: the sync and async clients only sleep what it says."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

RETRY_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    deadline_s: float = 30.0
    """Total time one call may take, retries included."""
    backoff_s: float = 0.2
    """First wait without a ``Retry-After``; doubled each attempt up to ``max_backoff_s``."""
    max_backoff_s: float = 5.0


@dataclass
class Attempts:
    """The retry state of one call (created per call)."""

    policy: RetryPolicy
    started: float
    count: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_wait(self, now: float, retry_after: float | None) -> float | None:
        """Seconds to sleep before the next attempt, or None when the deadline forbids it."""
        self.count += 1
        if retry_after is not None:
            wait = retry_after
        else:
            cap = min(self.policy.max_backoff_s, self.policy.backoff_s * 2 ** (self.count - 1))
            wait = cap / 2 + self.rng.uniform(0, cap / 2)
        if now + wait - self.started > self.policy.deadline_s:
            return None
        return wait
