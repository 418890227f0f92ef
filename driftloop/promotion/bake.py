"""The bake: watching a canary until the guard decides, and the background threads that
run bakes so a ``model.trained`` delivery is answered within its timeout."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from driftloop.policy import Policy
from driftloop.promotion.guard import GuardVerdict, Observer, judge
from driftloop.promotion.ledger import PromotionLedger
from driftloop.promotion.records import Promotion
from driftloop.promotion.steps import PromotionSteps
from driftloop.settings import Settings

log = logging.getLogger("driftloop.promotion")

Verdicts = tuple[dict[str, Any], ...]


def watch_canary(
    settings: Settings,
    policy: Policy,
    ledger: PromotionLedger,
    steps: PromotionSteps,
    p: Promotion,
    bake_s: float,
) -> tuple[GuardVerdict, Verdicts] | Promotion:
    """Watch ``p``'s canary until a check fails or the bake period ends with every check
    judged; evidence still missing after the grace period is a rollback verdict ("no
    evidence"). Returns the final verdict with the verdicts seen, or the promotion's
    record when it left the canary meanwhile (promoted or rolled back by hand)."""
    model, version = p.model, p.version
    since = p.canary_started_ms or int(time.time() * 1000)
    observer = Observer(settings, model, policy.metric, since)
    ends = since / 1000.0 + bake_s
    expires = ends + settings.promote_evidence_grace_s
    champion = p.champion or ""
    while True:
        now = time.time()
        obs = observer.observe([champion, version])
        verdict = judge(
            policy,
            obs.stats[champion],
            obs.stats[version],
            final=now >= ends,
            expired=now >= expires,
            unavailable=obs.unavailable,
        )
        current = ledger.state(model, version)
        if current is None or current.phase != "canary":
            return current or p
        seen = ledger.note_verdict(model, version, verdict)
        if verdict.verdict != "wait":
            return verdict, seen
        if policy.promotion.mode == "bandit":
            steps.bandit_step(policy, model, champion, obs.stats)
        next_at = ends if now < ends else expires
        time.sleep(min(policy.promotion.poll_s, max(next_at - time.time(), 0.05)))


class Bakes:
    """The bakes running in this process, one daemon thread per (model, version):
    ``bake`` runs in it; when it raises, ``failed`` is called (to roll the canary back)."""

    def __init__(
        self, bake: Callable[[str, str], object], failed: Callable[[str, str], None]
    ) -> None:
        self._bake = bake
        self._failed = failed
        self._threads: dict[tuple[str, str], threading.Thread] = {}
        self._lock = threading.Lock()

    def start(self, model: str, version: str) -> None:
        """Bake in the background, unless that bake already runs here."""
        key = (model, version)
        with self._lock:
            t = self._threads.get(key)
            if t is not None and t.is_alive():
                return
            t = threading.Thread(
                target=self._run, args=key, daemon=True, name=f"bake-{model}-{version}"
            )
            self._threads[key] = t
            t.start()

    def _run(self, model: str, version: str) -> None:
        try:
            self._bake(model, version)
        except Exception:
            log.exception("bake of %s v%s failed; rolling back its canary", model, version)
            try:
                self._failed(model, version)
            except Exception:
                log.exception("rollback of %s v%s failed", model, version)

    def join(self, model: str, version: str, timeout_s: float | None = None) -> None:
        t = self._threads.get((model, version))
        if t is not None:
            t.join(timeout_s)


__all__ = ["Bakes", "Verdicts", "watch_canary"]
