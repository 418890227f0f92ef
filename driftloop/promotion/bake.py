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
from driftloop.promotion.shadow import ShadowVerdict
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
    ends = since / 1000.0 + bake_s
    observer = Observer(settings, model, policy.metric, since, until_ms=int(ends * 1000))
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
        next_at = ends if now < ends else expires
        time.sleep(min(policy.promotion.poll_s, max(next_at - time.time(), 0.05)))


def watch_bandit(
    settings: Settings,
    policy: Policy,
    ledger: PromotionLedger,
    steps: PromotionSteps,
    p: Promotion,
) -> tuple[GuardVerdict, Verdicts] | Promotion:
    """Route by Thompson sampling until one version is best with the policy's posterior
    probability, while the guard still rolls back on errors or latency.

    Every ``bandit.refresh_s`` the rewards that arrived are read (``rewards``), the
    posterior recomputed and the weights written where the server re-reads them. The
    verdict is 'ok' when the challenger wins and the guard's error and latency checks
    were judged and passed; 'rollback' when a guard check fails, the champion wins, or
    ``bandit.max_s`` (plus the evidence grace) passes without a winner. Either way the
    reason names the figures (P(best), mean reward and count per version)."""
    from dataclasses import replace

    from driftloop.promotion import bandit, routing
    from driftloop.promotion.rewards import RewardReader

    model, version, champion = p.model, p.version, p.champion or ""
    bp = policy.promotion.bandit
    since = p.canary_started_ms or int(time.time() * 1000)
    observer = Observer(settings, model, policy.metric, since)
    reader = RewardReader(settings, steps.store, model, version, [champion, version], since)
    expires = since / 1000.0 + bp.max_s + settings.promote_evidence_grace_s
    last: dict[str, float] = {}
    try:
        while True:
            now = time.time()
            obs = observer.observe([champion, version], with_quality=False)
            # Quality is the rewards' business here: the guard keeps errors and latency,
            # with the policy's own minimum of requests.
            verdict = judge(
                policy,
                obs.stats[champion],
                obs.stats[version],
                final=True,
                expired=now >= expires,
                unavailable=obs.unavailable,
                quality=False,
                coverage=False,
            )
            current = ledger.state(model, version)
            if current is None or current.phase != "canary":
                return current or p
            try:
                arms = reader.poll()
                why = None
            except Exception as e:  # Kafka unreachable: no new evidence, weights kept
                log.warning("bandit of %s v%s: %s", model, version, e)
                arms, why = dict(reader.state.arms), str(e)[:300]
            p_best = bandit.prob_best(arms, bp.reward)
            decision = bandit.decide(
                arms, p_best, threshold=bp.threshold, min_rewards=bp.min_rewards
            )
            weights = bandit.weights(p_best, bp.floor)
            figures = {
                "p_best": p_best,
                "threshold": bp.threshold,
                "arms": {v: a.to_dict() for v, a in arms.items()},
            }
            if verdict.verdict == "rollback":
                v = replace(verdict, reason=f"{verdict.reason}; bandit: {decision.explain()}")
                return v, ledger.note_verdict(model, version, v)
            if decision.winner is not None and verdict.verdict == "ok":
                if decision.winner == version:
                    v = GuardVerdict(
                        "ok",
                        verdict.checks,
                        f"bandit promoted: {decision.explain()}; {verdict.explain()}",
                    )
                else:
                    v = GuardVerdict(
                        "rollback",
                        verdict.checks,
                        f"bandit kept the champion: {decision.explain()}",
                    )
                return v, ledger.note_verdict(model, version, v)
            if now >= expires:
                v = GuardVerdict(
                    "rollback",
                    verdict.checks,
                    f"no evidence: no bandit winner within {bp.max_s:g} s: {decision.explain()}",
                )
                return v, ledger.note_verdict(model, version, v)
            wait = GuardVerdict(
                "wait",
                verdict.checks,
                f"bandit: {decision.explain()}"
                + (f" (rewards unavailable: {why})" if why else "")
                + ("" if verdict.verdict == "ok" else f"; {verdict.reason}"),
            )
            if weights and any(abs(weights[k] - last.get(k, -1.0)) >= 0.01 for k in weights):
                steps.set_bandit_weights(
                    policy,
                    routing.Routing(
                        model, champion, weights, "bandit", time.time(), figures=figures
                    ),
                )
                last = weights
            # Noted after the weights: a reader that sees this verdict sees its weights.
            ledger.note_verdict(model, version, wait)
            time.sleep(min(bp.refresh_s, max(expires - time.time(), 0.05)))
    finally:
        reader.close()


def watch_shadow(
    settings: Settings,
    policy: Policy,
    ledger: PromotionLedger,
    p: Promotion,
) -> ShadowVerdict | Promotion:
    """Compare the mirrored answers until the shadow stage ends (``judge_shadow``)."""
    from driftloop.promotion import shadow

    model, version = p.model, p.version
    sp = policy.promotion.shadow
    assert sp is not None
    since = p.shadow_started_ms or int(time.time() * 1000)
    ends = since / 1000.0 + sp.duration_s
    expires = ends + settings.promote_evidence_grace_s
    while True:
        now = time.time()
        try:
            stats = shadow.observe(settings, model, version, since)
        except Exception as e:  # fail closed: an unreadable stage is no evidence
            log.warning("shadow of %s v%s unreadable: %s", model, version, e)
            stats = shadow.ShadowStats(0, 0, None, 0, None, None)
        verdict = shadow.judge_shadow(policy, stats, final=now >= ends, expired=now >= expires)
        current = ledger.state(model, version)
        if current is None or current.phase != "shadow":
            return current or p
        ledger.note_verdict(model, version, verdict)
        if verdict.verdict != "wait":
            return verdict
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


__all__ = ["Bakes", "Verdicts", "watch_bandit", "watch_canary", "watch_shadow"]
