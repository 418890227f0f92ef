"""The promote service: offline gate, canary, metric-guarded bake, promote or roll back.

A ``model.trained`` event (``start``) runs the gate at once and, when it passes, it
starts the canary and bakes in a background thread (so the HTTP delivery returns within
its timeout); ``promote`` and ``rollback`` are what ops call by hand (``driftloop promote``
/ ``driftloop rollback``) and what the bake calls at its end — one code path.

State is in the blob store (``ledger``: records, leases, history), so a restarted function
resumes its bakes (``open``). One promotion per model at a time: another version's
``model.trained``, hand promotion or rollback meanwhile is a 409 (delivery retries it).
A rollback restores exactly the champion the undone version replaced, so rollbacks walk
back through promotions and never bounce between two versions. ``records``: request rules;
``steps``: gate, routing, reload; ``bake``: watching a canary in background threads.

A policy with ``promotion.shadow`` runs shadow → canary (or bandit) → promotion: the
challenger first answers mirrored requests nobody sees (``shadow``), then takes traffic.
(Over 450 lines: every phase change below shares one lock, ledger and lease; split
apart, their ordering would be spread over modules.)
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Any

from driftloop import events as ev
from driftloop.blob import BlobStore, open_store
from driftloop.errors import Conflict, NotFound
from driftloop.function_service import FunctionService, Routes
from driftloop.http import Response
from driftloop.policy import Policy, load_policy
from driftloop.promotion import routing
from driftloop.promotion.bake import Bakes, watch_bandit, watch_canary, watch_shadow
from driftloop.promotion.guard import GuardVerdict
from driftloop.promotion.ledger import STALE_GATE_S, STALE_HAND_S, PromotionLedger
from driftloop.promotion.records import (
    FINAL,
    VERSION,
    VERSION_RULE,
    Lease,
    Promotion,
    check_model,
    check_version,
    trained_version,
)
from driftloop.promotion.steps import PromotionSteps
from driftloop.publisher import EventPublisher
from driftloop.registry import Registry
from driftloop.retrain.state import iso, now_utc
from driftloop.settings import Settings

log = logging.getLogger("driftloop.promotion")
SOURCE = "driftloop/promote"
ROUTES = Routes(name="promote", post="POST a model.trained CloudEvent", plain_json=False)


class PromotionService(FunctionService):
    """Everything behind the promote function and the promote/rollback commands."""

    routes = ROUTES

    def __init__(
        self,
        settings: Settings,
        *,
        store: BlobStore | None = None,
        background: bool = True,
        publisher: EventPublisher | None = None,
    ) -> None:
        self.settings = settings
        self.store = store or open_store(settings.resolved_blob_url, settings)
        self.registry = Registry(self.store)
        self.ledger = PromotionLedger(self.store)
        self.steps = PromotionSteps(settings, self.store, self.registry)
        self.publisher = publisher or EventPublisher(settings)
        self.background = background
        self._lock = threading.RLock()
        self.bakes = Bakes(self.bake, self._bake_failed)
        self._starting: set[tuple[str, str]] = set()

    def open(self) -> None:
        """Resume the bakes a previous process left in progress."""
        self.resume()

    def close(self) -> None:
        self.publisher.close()

    # ------------------------------------------------------------ the edge's hook

    def on_events(self, events: list[ev.Event]) -> Response:
        """202 when a promotion started or moved on; 200 when nothing was to be done
        (the version is already the champion, or its promotion was already handled)."""
        results = [self.start(*trained_version(e)) for e in events]
        status = 200 if all(r.get("noop") or r.get("duplicate") for r in results) else 202
        return Response.json(status, results[0] if len(results) == 1 else results)

    # ------------------------------------------------------------ state

    def state(self, model: str, version: str) -> Promotion | None:
        return self.ledger.state(model, version)

    def history(self, model: str) -> list[dict[str, Any]]:
        """Every phase change of the model's promotions, oldest first."""
        return self.ledger.history(model)

    def lease(self, model: str) -> Lease | None:
        return self.ledger.lease(model)

    def verdicts(self, model: str, version: str) -> list[dict[str, Any]]:
        return self.ledger.verdicts(model, version)

    def policy(self, model: str) -> Policy:
        return load_policy(self.settings.policy_dir, model)

    def bake_s(self, policy: Policy) -> float:
        s = self.settings.promote_bake_s
        return policy.promotion.bake_s if s is None else s

    # ------------------------------------------------------------ the flow

    def start(self, model: str, version: str) -> dict[str, Any]:
        """Gate now; canary and bake in the background (or inline when not background).

        The current champion is a no-op; a redelivery of a handled version is reported,
        not redone; another version's promotion in progress is a ``Conflict``.
        """
        model, version = check_model(model), check_version(version)
        self.registry.get(model, version)
        policy = self.policy(model)
        noop = {
            "model": model,
            "version": version,
            "phase": "champion",
            "noop": True,
            "reason": f"v{version} is already the champion; nothing to promote",
        }
        if self.registry.alias(model, "champion") == version:
            return noop
        with self._lock:
            existing = self.state(model, version)
            handled = existing is not None and existing.phase != "gate"
            if handled or (model, version) in self._starting:
                # A redelivered model.trained: report, don't redo.
                phase = existing.phase if existing is not None else "gate"
                if phase in ("shadow", "canary"):
                    self.bakes.start(model, version)
                return {"model": model, "version": version, "phase": phase, "duplicate": True}
            self._starting.add((model, version))
        try:
            lease = self.ledger.acquire(model, version, "promotion")
            try:
                champion = self.registry.alias(model, "champion")  # read under the lease
                if champion == version:
                    self.ledger.release(lease)
                    return noop
                return self._run(policy, model, version, champion)
            except BaseException:
                current = self.state(model, version)
                if current is None or current.phase == "gate":
                    self.ledger.release(lease)  # the next delivery starts over
                raise
        finally:
            with self._lock:
                self._starting.discard((model, version))

    def _run(
        self, policy: Policy, model: str, version: str, champion: str | None
    ) -> dict[str, Any]:
        p = self.ledger.record(Promotion(model, version, champion, "gate", iso(now_utc())))
        t0 = time.perf_counter()
        if champion is None:
            self.promote(model, version, reason="no champion to compare with")
            return {"model": model, "version": version, "phase": "promoted"}
        result = self.steps.gate(policy, model, version, champion)
        p = replace(p, gate=result.to_dict(), timings={"gate_s": time.perf_counter() - t0})
        self.ledger.save(p)
        if not result.passed:
            self.ledger.record(
                replace(p, phase="rejected", reason=result.detail, finished=iso(now_utc()))
            )
            self.ledger.release_for(model, version)
            self._emit(
                ev.MODEL_ROLLEDBACK,
                ev.ModelRolledBackData(
                    model=model,
                    version=version,
                    restored_version=champion,
                    reason=f"offline gate: {result.detail}",
                    stage="gate",
                ),
            )
            log.info("%s v%s rejected by the gate: %s", model, version, result.detail)
            return {
                "model": model,
                "version": version,
                "phase": "rejected",
                "gate": result.to_dict(),
            }
        if not policy.promotion.auto:
            self.ledger.record(
                replace(p, phase="gated", reason="passed the gate; auto promotion off")
            )
            self.ledger.release_for(model, version)
            return {"model": model, "version": version, "phase": "gated", "gate": result.to_dict()}
        if result.champion_problem is not None:
            # No working champion to canary against: the challenger passed its own checks.
            out = self.promote(model, version, reason=f"gate: {result.detail}")
            return {**out, "gate": result.to_dict(), "reason": f"gate: {result.detail}"}
        self.ledger.clear_verdicts(model, version)  # a fresh bake
        # The stage starts before the routing changes: the first answers it routes are
        # already in its windows (earlier ones are the champion's alone).
        started_ms = int(time.time() * 1000)
        if policy.promotion.shadow is not None:
            self.steps.start_shadow(policy, model, version, champion)
            self.ledger.record(replace(p, phase="shadow", shadow_started_ms=started_ms))
        else:
            self.steps.start_canary(policy, model, version, champion)
            self.ledger.record(replace(p, phase="canary", canary_started_ms=started_ms))
        if self.background:
            self.bakes.start(model, version)
            return {
                "model": model,
                "version": version,
                "phase": "shadow" if policy.promotion.shadow is not None else "canary",
                "gate": result.to_dict(),
                "bake_s": self.bake_s(policy),
            }
        final = self.bake(model, version)
        return {
            "model": model,
            "version": version,
            "phase": final.phase,
            "gate": result.to_dict(),
            "reason": final.reason,
        }

    def _bake_failed(self, model: str, version: str) -> None:
        """A bake raised: its canary is rolled back."""
        p = self.state(model, version)
        if p is not None and p.phase in ("shadow", "canary"):
            self.rollback(model, version=version, reason="bake failed with an error")

    def wait(self, model: str, version: str, timeout_s: float | None = None) -> Promotion | None:
        self.bakes.join(model, version, timeout_s)
        return self.state(model, version)

    def bake(self, model: str, version: str) -> Promotion:
        """Watch the shadow stage when there is one (``bake.watch_shadow``), then the
        canary (``bake.watch_canary``, or ``watch_bandit`` in bandit mode); then promote
        or roll back."""
        p = self.state(model, version)
        if p is None or p.phase not in ("shadow", "canary"):
            raise NotFound(f"{model} v{version} has no canary in progress")
        policy = self.policy(model)
        if p.phase == "shadow":
            moved = self._after_shadow(policy, p)
            if moved.phase != "canary":
                return moved
            p = moved
        if policy.promotion.mode == "bandit":
            outcome = watch_bandit(self.settings, policy, self.ledger, self.steps, p)
        else:
            outcome = watch_canary(
                self.settings, policy, self.ledger, self.steps, p, self.bake_s(policy)
            )
        if isinstance(outcome, Promotion):
            return outcome  # promoted or rolled back by hand meanwhile
        return self._finish_canary(model, version, *outcome)

    def _after_shadow(self, policy: Policy, p: Promotion) -> Promotion:
        """The shadow stage's end: on to the canary, or rolled back with the figures."""
        model, version = p.model, p.version
        outcome = watch_shadow(self.settings, policy, self.ledger, p)
        if isinstance(outcome, Promotion):
            return outcome  # promoted or rolled back by hand meanwhile
        with self._lock:
            current = self.state(model, version)
            if current is None or current.phase != "shadow":
                return current or p
            shadowed = replace(current, verdicts=(*current.verdicts, outcome.to_dict()))
            self.ledger.save(shadowed)
            if outcome.verdict != "ok":
                self.rollback(model, version=version, reason=outcome.reason)
                return self.state(model, version) or shadowed
            started_ms = int(time.time() * 1000)  # before the routing changes, as in start
            self.steps.start_canary(policy, model, version, current.champion or "")
            return self.ledger.record(
                replace(
                    shadowed, phase="canary", reason=outcome.reason, canary_started_ms=started_ms
                )
            )

    def _finish_canary(
        self, model: str, version: str, verdict: GuardVerdict, seen: tuple[dict[str, Any], ...]
    ) -> Promotion:
        with self._lock:
            current = self.state(model, version)
            if current is None or current.phase != "canary":
                return current or self.state(model, version)  # type: ignore[return-value]
            self.ledger.save(replace(current, verdicts=seen))
            if verdict.verdict == "ok":
                self.promote(model, version, reason=verdict.reason)
            else:
                self.rollback(model, version=version, reason=verdict.reason)
        return self.state(model, version) or current

    # ------------------------------------------------------------ promote / roll back

    def promote(
        self, model: str, version: str, *, reason: str = "promoted by hand"
    ) -> dict[str, Any]:
        """Champion → ``version`` with 100% of traffic; the challenger alias is cleared.

        The current champion is a no-op; while another version's promotion is in
        progress this is a ``Conflict`` (roll that one back or let it finish first)."""
        model, version = check_model(model), check_version(version)
        self.registry.get(model, version)
        policy = self.policy(model)
        lease = self.ledger.acquire(model, version, "promote")
        try:
            previous = self.registry.alias(model, "champion")
            if previous == version:
                return {
                    "model": model,
                    "version": version,
                    "previous_version": previous,
                    "phase": "champion",
                    "noop": True,
                    "reason": f"v{version} is already the champion; nothing to promote",
                }
            self.registry.set_alias(model, "champion", version, reason=reason)
            if self.registry.alias(model, "challenger") is not None:
                self.registry.clear_alias(model, "challenger")
            self.steps.apply_routing(policy, routing.all_to(model, version))
            p = self.state(model, version)
            if p is None or p.phase in ("rejected", "promoted", "rolledback", "abandoned"):
                p = Promotion(model, version, previous, "promoted", iso(now_utc()))
            self.ledger.record(
                replace(
                    p, champion=previous, phase="promoted", reason=reason, finished=iso(now_utc())
                )
            )
        finally:
            self.ledger.release(lease)
        self._emit(
            ev.MODEL_PROMOTED,
            ev.ModelPromotedData(
                model=model, version=version, previous_version=previous, reason=reason
            ),
        )
        log.info("%s v%s promoted (was v%s): %s", model, version, previous, reason)
        return {
            "model": model,
            "version": version,
            "previous_version": previous,
            "phase": "promoted",
        }

    def rollback(
        self, model: str, *, version: str | None = None, reason: str = "rolled back by hand"
    ) -> dict[str, Any]:
        """Undo ``version`` (default: the canary in progress, else the champion).

        A canary ends with the challenger out and the champion at 100%. A champion is
        replaced by exactly the champion its promotion replaced; a champion that replaced
        none (the first version, or one restored by a rollback that has no promotion of its
        own) has nothing to undo: ``NotFound``, never a jump forward to a later version.
        """
        model = check_model(model)
        if version is not None:
            check_version(version)
        champion = self.registry.alias(model, "champion")
        challenger = self.registry.alias(model, "challenger")
        canary = self.state(model, challenger) if challenger is not None else None
        in_canary = (
            canary is not None and canary.phase in ("shadow", "canary") and challenger != champion
        )
        target = challenger if in_canary else champion
        if target is None:
            raise NotFound(f"{model} has no champion and no canary to roll back")
        if version is not None and version != target:
            raise Conflict(
                f"{model} v{version} is neither in canary nor the champion "
                f"(v{target} is {'in canary' if in_canary else 'the champion'}); "
                "only that can be rolled back"
            )
        policy = self.policy(model)
        lease = self.ledger.acquire(model, target, "rollback")
        try:
            if (
                self.registry.alias(model, "champion"),
                self.registry.alias(model, "challenger"),
            ) != (champion, challenger):
                raise Conflict(
                    f"{model}'s champion or canary changed meanwhile; nothing was "
                    "rolled back, retry"
                )
            p = self.state(model, target)
            if in_canary:
                self.registry.clear_alias(model, "challenger")
                restored = champion
            else:
                if p is None or p.phase != "promoted" or not p.champion:
                    raise NotFound(
                        f"{model} v{target} replaced no earlier champion (it was "
                        "not made champion by a recorded promotion); nothing to "
                        "roll back to — promote a version by hand instead"
                    )
                restored = p.champion
                self.registry.get(model, restored)
                self.registry.set_alias(
                    model, "champion", restored, reason=f"{reason} (undoes v{target})"
                )
            self.steps.apply_routing(policy, routing.all_to(model, restored))  # type: ignore[arg-type]
            base = p or Promotion(model, target, restored, "rolledback", iso(now_utc()))
            self.ledger.record(
                replace(base, phase="rolledback", reason=reason, finished=iso(now_utc()))
            )
        finally:
            self.ledger.release(lease)
        self._emit(
            ev.MODEL_ROLLEDBACK,
            ev.ModelRolledBackData(
                model=model,
                version=target,
                restored_version=restored,
                reason=reason,
                stage="canary" if in_canary else "champion",
            ),
        )
        log.info("%s v%s rolled back to v%s: %s", model, target, restored, reason)
        return {
            "model": model,
            "version": target,
            "restored_version": restored,
            "phase": "rolledback",
            "reason": reason,
        }

    def resume(self) -> list[tuple[str, str]]:
        """Restart the bakes a previous process left in the canary phase.

        Only a canary that is still in place (the model's lease and challenger alias are
        its own) is resumed; any other record left in 'canary' is marked 'abandoned'
        without touching aliases or traffic, so a restart never moves the champion."""
        resumed = []
        for p in self.ledger.promotions():
            if p.phase not in ("shadow", "canary"):
                continue
            holder = self.lease(p.model)
            challenger = self.registry.alias(p.model, "challenger")
            if holder is None or holder.version != p.version or challenger != p.version:
                why = (
                    f"its canary was no longer in place when the promote function resumed "
                    f"(lease: {holder.version if holder else 'none'}, challenger: "
                    f"{challenger or 'none'})"
                )
                log.warning("%s v%s: %s", p.model, p.version, why)
                self.ledger.record(
                    replace(p, phase="abandoned", reason=why, finished=iso(now_utc()))
                )
                if holder is not None and holder.version == p.version:
                    self.ledger.release(holder)
                continue
            self.bakes.start(p.model, p.version)
            resumed.append((p.model, p.version))
        return resumed

    def _emit(self, type_: str, data: ev.ModelPromotedData | ev.ModelRolledBackData) -> ev.Event:
        """Publish a promotion's outcome; a failure to publish is logged, never undoes it."""
        model = data.model
        event = ev.new_event(type_, SOURCE, data, datacontenttype=ev.JSON, model=model)
        try:
            self.publisher.publish(event, key=model)
        except Exception as e:
            log.error("could not emit %s for %s: %s", type_, model, e)
        return event


__all__ = [
    "FINAL",
    "SOURCE",
    "STALE_GATE_S",
    "STALE_HAND_S",
    "VERSION",
    "VERSION_RULE",
    "Lease",
    "Promotion",
    "PromotionService",
    "check_version",
]
