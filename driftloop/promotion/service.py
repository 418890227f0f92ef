"""The promote service: offline gate, canary, metric-guarded bake, promote or roll back.

``on_trained`` (a ``model.trained`` event) runs the gate at once and, when it passes,
starts the canary and bakes in a background thread (so the HTTP delivery returns within
its timeout); ``promote`` and ``rollback`` are what ops call by hand (``driftloop promote``
/ ``driftloop rollback``) and what the bake calls at its end — one code path.

State in the blob store, so a restarted function resumes a bake in progress::

    promotions/<model>/<version>.json        the version's promotion (phase, verdicts)
    promotions/<model>/active.json           the model's lease: one promotion at a time
    promotions/<model>/history/<ts>-<n>.json every phase change, append-only

One promotion per model at a time: the lease is created if absent
(``BlobStore.put_if_absent``) when a promotion starts and deleted when it ends; a
``model.trained`` for another version meanwhile is refused with 409 (event delivery
retries it later), as are a hand promotion of another version and a rollback of anything
but the version in progress. A rollback names the version it undoes and restores exactly
the champion that version replaced (recorded when it was promoted), so rollbacks walk
back through promotions and never bounce between two versions.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from driftloop import events as ev
from driftloop import topics
from driftloop.blob import BlobStore, open_store
from driftloop.errors import (
    BadRequest,
    Conflict,
    DriftloopError,
    FieldError,
    NotFound,
    Unavailable,
    ValidationFailed,
)
from driftloop.http import Response, error_response
from driftloop.naming import SAFE_NAME_RULE, is_safe_segment, safe_segment
from driftloop.policy import Policy, load_policy
from driftloop.promotion import routing
from driftloop.promotion.gate import GateResult, run_gate
from driftloop.promotion.guard import GuardVerdict, Observer, judge
from driftloop.registry import Registry
from driftloop.retrain.state import iso, now_utc, parse_iso
from driftloop.settings import Settings

log = logging.getLogger("driftloop.promotion")
SOURCE = "driftloop/promote"
Phase = Literal["gate", "rejected", "canary", "promoted", "rolledback", "gated", "abandoned"]
LeaseAction = Literal["promotion", "promote", "rollback"]
FINAL: frozenset[str] = frozenset({"rejected", "promoted", "rolledback", "gated", "abandoned"})
VERSION = re.compile(r"[1-9][0-9]{0,17}")
VERSION_RULE = "a registry version: a positive integer without leading zeros, 1-18 digits"
STALE_HAND_S = 600.0
"""A lease of a hand promotion or rollback older than this is from a process that died."""
STALE_GATE_S = 1800.0
"""A lease whose promotion is still in its gate after this long: the gate died with its
process and its event was not redelivered."""


def check_version(value: Any, *, field: str = "version") -> str:
    """``value`` when it is a registry version, else a 400 naming the field and rule."""
    if not isinstance(value, str) or not VERSION.fullmatch(value):
        raise ValidationFailed([FieldError(field, "version", VERSION_RULE)])
    return value


@dataclass(frozen=True)
class Promotion:
    """One version's way through gate, canary and bake."""

    model: str
    version: str
    champion: str | None
    """The champion this version was measured against, and replaced if promoted."""
    phase: Phase
    started: str
    canary_started_ms: int | None = None
    gate: dict[str, Any] | None = None
    verdicts: tuple[dict[str, Any], ...] = ()
    reason: str = ""
    finished: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["verdicts"] = list(self.verdicts)[-20:]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Promotion:
        return cls(**{**d, "verdicts": tuple(d.get("verdicts") or ())})


@dataclass(frozen=True)
class Lease:
    """Who holds a model's promotion: a version and what is being done with it."""

    model: str
    version: str
    action: LeaseAction
    since: str
    nonce: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _model(value: Any) -> str:
    if not is_safe_segment(value):
        raise BadRequest("model: a valid model name is required",
                         fields=[FieldError("model", "safe-name", SAFE_NAME_RULE)])
    return str(value)


class PromotionService:
    """Everything behind the promote function and the promote/rollback commands."""

    def __init__(self, settings: Settings, *, store: BlobStore | None = None,
                 background: bool = True) -> None:
        self.settings = settings
        self.store = store or open_store(settings.resolved_blob_url, settings)
        self.registry = Registry(self.store)
        self.background = background
        self._lock = threading.RLock()
        self._threads: dict[tuple[str, str], threading.Thread] = {}
        self._starting: set[tuple[str, str]] = set()
        self._producer: Any = None

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None

    # ------------------------------------------------------------ state

    def _key(self, model: str, version: str) -> str:
        m, v = safe_segment(model, field="model"), safe_segment(version, field="version")
        return f"promotions/{m}/{v}.json"

    def save(self, p: Promotion) -> Promotion:
        self.store.put(self._key(p.model, p.version), json.dumps(p.to_dict()).encode())
        return p

    def _record(self, p: Promotion) -> Promotion:
        """Save a phase change and append it to the model's history (never rewritten)."""
        self.save(p)
        stamp = now_utc().strftime("%Y%m%dT%H%M%S%fZ")
        entry = {"at": iso(now_utc()), "model": p.model, "version": p.version,
                 "phase": p.phase, "champion": p.champion, "reason": p.reason}
        self.store.put_if_absent(f"promotions/{p.model}/history/{stamp}-{uuid.uuid4().hex[:8]}"
                                 ".json", json.dumps(entry).encode())
        return p

    def history(self, model: str) -> list[dict[str, Any]]:
        """Every phase change of the model's promotions, oldest first."""
        prefix = f"promotions/{safe_segment(model, field='model')}/history/"
        return [json.loads(self.store.get(k)) for k in self.store.list(prefix)]

    def state(self, model: str, version: str) -> Promotion | None:
        try:
            return Promotion.from_dict(json.loads(self.store.get(self._key(model, version))))
        except KeyError:
            return None

    def policy(self, model: str) -> Policy:
        return load_policy(self.settings.policy_dir, model)

    def bake_s(self, policy: Policy) -> float:
        s = self.settings.promote_bake_s
        return policy.promotion.bake_s if s is None else s

    # ------------------------------------------------------------ one promotion per model

    def _lease_key(self, model: str) -> str:
        return f"promotions/{safe_segment(model, field='model')}/active.json"

    def lease(self, model: str) -> Lease | None:
        """The model's current lease, if a promotion (or a hand action) is in progress."""
        try:
            return Lease(**json.loads(self.store.get(self._lease_key(model))))
        except KeyError:
            return None

    def _stale(self, lease: Lease) -> bool:
        """A lease whose holder is gone: its promotion ended, or it is too old to be alive."""
        age = (now_utc() - parse_iso(lease.since)).total_seconds()
        if lease.action != "promotion":
            return age > STALE_HAND_S
        p = self.state(lease.model, lease.version)
        if p is None:
            return age > 60
        return p.phase in FINAL or (p.phase == "gate" and age > STALE_GATE_S)

    def _acquire(self, model: str, version: str, action: LeaseAction) -> Lease:
        """Hold the model's lease for ``version``: a fresh one, or the one ``version``'s own
        promotion holds. Another version's live lease is a ``Conflict``."""
        mine = Lease(model, version, action, iso(now_utc()), uuid.uuid4().hex)
        for _ in range(5):
            if self.store.put_if_absent(self._lease_key(model),
                                        json.dumps(mine.to_dict()).encode()):
                return mine
            holder = self.lease(model)
            if holder is None:
                continue  # released meanwhile
            if holder.version == version and holder.action == "promotion":
                return holder
            if self._stale(holder):
                log.warning("%s: breaking the stale lease of v%s (%s since %s)", model,
                            holder.version, holder.action, holder.since)
                self._release(holder)
                continue
            raise Conflict(f"{model}: v{holder.version}'s {holder.action} is in progress "
                           f"(since {holder.since}); one promotion per model at a time, so "
                           f"v{version} has to wait until it ends")
        raise Unavailable(f"{model}: the promotion lease kept changing hands; retry")

    def _release(self, lease: Lease) -> None:
        """Delete the lease if it is still this one (same holder and nonce)."""
        current = self.lease(lease.model)
        if current is not None and current.nonce == lease.nonce:
            self.store.delete(self._lease_key(lease.model))

    def _release_for(self, model: str, version: str) -> None:
        """The promotion of ``version`` ended: free the model for the next one."""
        current = self.lease(model)
        if current is not None and current.version == version:
            self._release(current)

    # ------------------------------------------------------------ HTTP entry

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        """202 when a promotion started or moved on; 200 when nothing was to be done
        (the version is already the champion, or its promotion was already handled)."""
        try:
            if method == "GET" and path.rstrip("/") in ("/healthz", "/readyz"):
                return Response.json(200, {"status": "ok"})
            if method != "POST":
                return Response.json(405, {"error": "method_not_allowed",
                                           "message": "POST a model.trained CloudEvent"})
            results = []
            for event in ev.from_http(headers, body, max_depth=self.settings.max_json_depth):
                if event.type != ev.MODEL_TRAINED:
                    raise BadRequest(f"event type {event.type!r} is not {ev.MODEL_TRAINED}",
                                     fields=[FieldError("type", "supported",
                                                        "only model.trained starts a promotion")])
                results.append(self.on_trained(event))
            status = 200 if all(r.get("noop") or r.get("duplicate") for r in results) else 202
            return Response.json(status, results[0] if len(results) == 1 else results)
        except DriftloopError as e:
            return error_response(e)

    def on_trained(self, event: ev.Event) -> dict[str, Any]:
        data = ev.ModelTrainedData.parse(event.data)
        errors = []
        if not is_safe_segment(data.model):
            errors.append(FieldError("data.model", "safe-name", SAFE_NAME_RULE))
        for name in ("version", "parent_version"):
            value = getattr(data, name)
            if (value is not None or name == "version") and not VERSION.fullmatch(value or ""):
                errors.append(FieldError(f"data.{name}", "version", VERSION_RULE))
        if errors:
            raise ValidationFailed(errors)
        return self.start(data.model, data.version)

    # ------------------------------------------------------------ the flow

    def start(self, model: str, version: str) -> dict[str, Any]:
        """Gate now; canary and bake in the background (or inline when not background).

        The current champion is a no-op; a redelivery of a handled version is reported,
        not redone; another version's promotion in progress is a ``Conflict``.
        """
        model, version = _model(model), check_version(version)
        self.registry.get(model, version)
        policy = self.policy(model)
        noop = {"model": model, "version": version, "phase": "champion", "noop": True,
                "reason": f"v{version} is already the champion; nothing to promote"}
        if self.registry.alias(model, "champion") == version:
            return noop
        with self._lock:
            existing = self.state(model, version)
            if (existing is not None and existing.phase != "gate") or \
                    (model, version) in self._starting:
                # A redelivered model.trained: report, don't redo.
                phase = existing.phase if existing is not None else "gate"
                if phase == "canary":
                    self._bake_async(model, version)
                return {"model": model, "version": version, "phase": phase,
                        "duplicate": True}
            self._starting.add((model, version))
        try:
            lease = self._acquire(model, version, "promotion")
            try:
                champion = self.registry.alias(model, "champion")  # read under the lease
                if champion == version:
                    self._release(lease)
                    return noop
                return self._run(policy, model, version, champion)
            except BaseException:
                current = self.state(model, version)
                if current is None or current.phase == "gate":
                    self._release(lease)  # the next delivery starts over
                raise
        finally:
            with self._lock:
                self._starting.discard((model, version))

    def _run(self, policy: Policy, model: str, version: str,
             champion: str | None) -> dict[str, Any]:
        p = self._record(Promotion(model, version, champion, "gate", iso(now_utc())))
        t0 = time.perf_counter()
        if champion is None:
            self.promote(model, version, reason="no champion to compare with")
            return {"model": model, "version": version, "phase": "promoted"}
        result = self.gate(policy, model, version, champion)
        p = replace(p, gate=result.to_dict(), timings={"gate_s": time.perf_counter() - t0})
        self.save(p)
        if not result.passed:
            self._record(replace(p, phase="rejected", reason=result.detail,
                                 finished=iso(now_utc())))
            self._release_for(model, version)
            self._emit(ev.MODEL_ROLLEDBACK, {"model": model, "version": version,
                                             "restored_version": champion,
                                             "reason": f"offline gate: {result.detail}",
                                             "stage": "gate"})
            log.info("%s v%s rejected by the gate: %s", model, version, result.detail)
            return {"model": model, "version": version, "phase": "rejected",
                    "gate": result.to_dict()}
        if not policy.promotion.auto:
            self._record(replace(p, phase="gated", reason="passed the gate; auto promotion off"))
            self._release_for(model, version)
            return {"model": model, "version": version, "phase": "gated",
                    "gate": result.to_dict()}
        if result.champion_problem is not None:
            # No working champion to canary against: the challenger passed its own checks.
            out = self.promote(model, version, reason=f"gate: {result.detail}")
            return {**out, "gate": result.to_dict(), "reason": f"gate: {result.detail}"}
        self.store.delete(self._verdicts_key(model, version))  # a fresh bake
        self.start_canary(policy, model, version, champion)
        self._record(replace(p, phase="canary", canary_started_ms=int(time.time() * 1000)))
        if self.background:
            self._bake_async(model, version)
            return {"model": model, "version": version, "phase": "canary",
                    "gate": result.to_dict(), "bake_s": self.bake_s(policy)}
        final = self.bake(model, version)
        return {"model": model, "version": version, "phase": final.phase,
                "gate": result.to_dict(), "reason": final.reason}

    def _artifact(self, model: str, version: str) -> tuple[dict[str, bytes] | None, str | None]:
        """The artifact, or None with what is wrong (the store unreachable is an error)."""
        try:
            return self.registry.artifact(model, version), None
        except Unavailable:
            raise
        except Exception as e:
            what = "missing" if isinstance(e, KeyError | NotFound) else "unreadable"
            return None, f"v{version}'s artifact is {what} ({type(e).__name__}: {e})"[:300]

    def gate(self, policy: Policy, model: str, version: str, champion: str) -> GateResult:
        from driftloop.retrain.pipeline import load_eval_set
        from driftloop.retrain.trainers import trainer_for

        trainer = trainer_for(model)
        _, holdout = trainer.base()
        recent = load_eval_set(self.store, trainer,
                               self.registry.get(model, version).lineage.get("eval_set"))
        challenger, challenger_problem = self._artifact(model, version)
        current, champion_problem = self._artifact(model, champion)
        if champion_problem is not None:
            champion_problem = f"champion {champion_problem}"
        return run_gate(policy, challenger, current, holdout, recent, trainer,
                        champion_problem=champion_problem,
                        challenger_problem=challenger_problem)

    def start_canary(self, policy: Policy, model: str, version: str, champion: str) -> None:
        self.registry.set_alias(model, "challenger", version, reason="canary")
        w = policy.promotion.canary_weight
        r = routing.canary(model, champion, version, w)
        if policy.promotion.mode == "bandit":
            r = replace(r, mode="bandit")
        self.apply_routing(policy, r)
        log.info("%s v%s canary at %.0f%% against v%s", model, version, w * 100, champion)

    def apply_routing(self, policy: Policy, r: routing.Routing) -> None:
        """Write the weights where the serving side reads them, then reload the server."""
        if policy.promotion.routing == "seldon":
            self._apply_experiment(r)
        routing.save(self.store, r)
        self.registry.set_challenger_weight(r.model, routing.challenger_share(r))
        self.reload(r.model)

    def _apply_experiment(self, r: routing.Routing) -> None:
        from driftloop.kube import kube_client

        client = kube_client("seldon routing")
        body = routing.experiment_manifest(r.model, r, namespace=self.settings.k8s_namespace)
        api = client.CustomObjectsApi()
        args = ("mlops.seldon.io", "v1alpha1", self.settings.k8s_namespace, "experiments")
        try:
            api.patch_namespaced_custom_object(*args, body["metadata"]["name"], body)
        except client.exceptions.ApiException as e:
            if e.status != 404:
                raise
            api.create_namespaced_custom_object(*args, body)

    def reload(self, model: str) -> bool:
        """Ask the model server to re-read the registry (best effort: it also re-reads at start)."""
        import httpx

        from driftloop.serving.client import V2Client

        try:
            with V2Client(self.settings.resolved_serving_url, timeout_s=60) as c:
                c.load(model)
            return True
        except (DriftloopError, httpx.HTTPError) as e:
            log.warning("model server did not reload %s: %s", model, e)
            return False

    def _bake_async(self, model: str, version: str) -> None:
        key = (model, version)
        with self._lock:
            t = self._threads.get(key)
            if t is not None and t.is_alive():
                return
            t = threading.Thread(target=self._bake_logged, args=key, daemon=True,
                                 name=f"bake-{model}-{version}")
            self._threads[key] = t
            t.start()

    def _bake_logged(self, model: str, version: str) -> None:
        try:
            self.bake(model, version)
        except Exception:
            log.exception("bake of %s v%s failed; rolling back its canary", model, version)
            try:
                p = self.state(model, version)
                if p is not None and p.phase == "canary":
                    self.rollback(model, version=version, reason="bake failed with an error")
            except Exception:
                log.exception("rollback of %s v%s failed", model, version)

    def wait(self, model: str, version: str, timeout_s: float | None = None) -> Promotion | None:
        t = self._threads.get((model, version))
        if t is not None:
            t.join(timeout_s)
        return self.state(model, version)

    def bake(self, model: str, version: str) -> Promotion:
        """Watch the canary until a check fails or the bake period ends with every check
        judged; evidence still missing after the grace period rolls back ("no evidence")."""
        p = self.state(model, version)
        if p is None or p.phase != "canary":
            raise NotFound(f"{model} v{version} has no canary in progress")
        policy = self.policy(model)
        since = p.canary_started_ms or int(time.time() * 1000)
        observer = Observer(self.settings, model, policy.metric, since)
        ends = since / 1000.0 + self.bake_s(policy)
        expires = ends + self.settings.promote_evidence_grace_s
        champion = p.champion or ""
        while True:
            now = time.time()
            obs = observer.observe([champion, version])
            verdict = judge(policy, obs.stats[champion], obs.stats[version],
                            final=now >= ends, expired=now >= expires,
                            unavailable=obs.unavailable)
            current = self.state(model, version)
            if current is None or current.phase != "canary":
                return current or p  # promoted or rolled back by hand meanwhile
            seen = self._note_verdict(model, version, verdict)
            if verdict.verdict != "wait":
                break
            if policy.promotion.mode == "bandit":
                self._bandit_step(policy, model, champion, version, obs.stats)
            next_at = ends if now < ends else expires
            time.sleep(min(policy.promotion.poll_s, max(next_at - time.time(), 0.05)))
        return self._finish_canary(model, version, verdict, seen)

    def _verdicts_key(self, model: str, version: str) -> str:
        m, v = safe_segment(model, field="model"), safe_segment(version, field="version")
        return f"promotions/{m}/bake/{v}.json"

    def verdicts(self, model: str, version: str) -> list[dict[str, Any]]:
        """The bake's latest verdicts (each with its reason), oldest first."""
        try:
            return list(json.loads(self.store.get(self._verdicts_key(model, version))))
        except KeyError:
            return []

    def _note_verdict(self, model: str, version: str,
                      verdict: GuardVerdict) -> tuple[dict[str, Any], ...]:
        """Kept beside the promotion record, so the bake never rewrites the record itself
        (a hand promotion or rollback from another process may be writing it)."""
        seen = [*self.verdicts(model, version), {"at": iso(now_utc()), **verdict.to_dict()}]
        self.store.put(self._verdicts_key(model, version), json.dumps(seen[-20:]).encode())
        return tuple(seen[-20:])

    def _finish_canary(self, model: str, version: str, verdict: GuardVerdict,
                       seen: tuple[dict[str, Any], ...]) -> Promotion:
        with self._lock:
            current = self.state(model, version)
            if current is None or current.phase != "canary":
                return current or self.state(model, version)  # type: ignore[return-value]
            self.save(replace(current, verdicts=seen))
            if verdict.verdict == "ok":
                self.promote(model, version, reason=verdict.reason)
            else:
                self.rollback(model, version=version, reason=verdict.reason)
        return self.state(model, version) or current

    def _bandit_step(self, policy: Policy, model: str, champion: str, version: str,
                     stats: Mapping[str, Any]) -> None:
        from driftloop.promotion.bandit import thompson_weights

        obs = {v: (s.quality, s.samples) for v, s in stats.items()
               if s.quality is not None and s.samples}
        if len(obs) < 2:
            return
        weights = thompson_weights(obs)
        self.apply_routing(policy, routing.Routing(model, champion, weights, "bandit",
                                                   time.time()))

    # ------------------------------------------------------------ promote / roll back

    def promote(self, model: str, version: str, *,
                reason: str = "promoted by hand") -> dict[str, Any]:
        """Champion → ``version`` with 100% of traffic; the challenger alias is cleared.

        The current champion is a no-op; while another version's promotion is in
        progress this is a ``Conflict`` (roll that one back or let it finish first)."""
        model, version = _model(model), check_version(version)
        self.registry.get(model, version)
        policy = self.policy(model)
        lease = self._acquire(model, version, "promote")
        try:
            previous = self.registry.alias(model, "champion")
            if previous == version:
                return {"model": model, "version": version, "previous_version": previous,
                        "phase": "champion", "noop": True,
                        "reason": f"v{version} is already the champion; nothing to promote"}
            self.registry.set_alias(model, "champion", version, reason=reason)
            if self.registry.alias(model, "challenger") is not None:
                self.registry.clear_alias(model, "challenger")
            self.apply_routing(policy, routing.all_to(model, version))
            p = self.state(model, version)
            if p is None or p.phase in ("rejected", "promoted", "rolledback", "abandoned"):
                p = Promotion(model, version, previous, "promoted", iso(now_utc()))
            self._record(replace(p, champion=previous, phase="promoted", reason=reason,
                                 finished=iso(now_utc())))
        finally:
            self._release(lease)
        self._emit(ev.MODEL_PROMOTED, {"model": model, "version": version,
                                       "previous_version": previous, "reason": reason})
        log.info("%s v%s promoted (was v%s): %s", model, version, previous, reason)
        return {"model": model, "version": version, "previous_version": previous,
                "phase": "promoted"}

    def rollback(self, model: str, *, version: str | None = None,
                 reason: str = "rolled back by hand") -> dict[str, Any]:
        """Undo ``version`` (default: the canary in progress, else the champion).

        A canary ends with the challenger out and the champion at 100%. A champion is
        replaced by exactly the champion its promotion replaced; a champion that replaced
        none (the first version, or one restored by a rollback that has no promotion of its
        own) has nothing to undo: ``NotFound``, never a jump forward to a later version.
        """
        model = _model(model)
        if version is not None:
            check_version(version)
        champion = self.registry.alias(model, "champion")
        challenger = self.registry.alias(model, "challenger")
        canary = self.state(model, challenger) if challenger is not None else None
        in_canary = canary is not None and canary.phase == "canary" and challenger != champion
        target = challenger if in_canary else champion
        if target is None:
            raise NotFound(f"{model} has no champion and no canary to roll back")
        if version is not None and version != target:
            raise Conflict(f"{model} v{version} is neither in canary nor the champion "
                           f"(v{target} is {'in canary' if in_canary else 'the champion'}); "
                           "only that can be rolled back")
        policy = self.policy(model)
        lease = self._acquire(model, target, "rollback")
        try:
            if (self.registry.alias(model, "champion"),
                    self.registry.alias(model, "challenger")) != (champion, challenger):
                raise Conflict(f"{model}'s champion or canary changed meanwhile; nothing was "
                               "rolled back, retry")
            p = self.state(model, target)
            if in_canary:
                self.registry.clear_alias(model, "challenger")
                restored = champion
            else:
                if p is None or p.phase != "promoted" or not p.champion:
                    raise NotFound(f"{model} v{target} replaced no earlier champion (it was "
                                   "not made champion by a recorded promotion); nothing to "
                                   "roll back to — promote a version by hand instead")
                restored = p.champion
                self.registry.get(model, restored)
                self.registry.set_alias(model, "champion", restored,
                                        reason=f"{reason} (undoes v{target})")
            self.apply_routing(policy, routing.all_to(model, restored))  # type: ignore[arg-type]
            base = p or Promotion(model, target, restored, "rolledback", iso(now_utc()))
            self._record(replace(base, phase="rolledback", reason=reason,
                                 finished=iso(now_utc())))
        finally:
            self._release(lease)
        self._emit(ev.MODEL_ROLLEDBACK, {"model": model, "version": target,
                                         "restored_version": restored, "reason": reason,
                                         "stage": "canary" if in_canary else "champion"})
        log.info("%s v%s rolled back to v%s: %s", model, target, restored, reason)
        return {"model": model, "version": target, "restored_version": restored,
                "phase": "rolledback", "reason": reason}

    def resume(self) -> list[tuple[str, str]]:
        """Restart the bakes a previous process left in the canary phase.

        Only a canary that is still in place (the model's lease and challenger alias are
        its own) is resumed; any other record left in 'canary' is marked 'abandoned'
        without touching aliases or traffic, so a restart never moves the champion."""
        resumed = []
        for key in self.store.list("promotions/"):
            parts = key.split("/")
            if len(parts) != 3 or not VERSION.fullmatch(parts[2].removesuffix(".json")):
                continue
            try:
                p = Promotion.from_dict(json.loads(self.store.get(key)))
            except (KeyError, ValueError, TypeError):
                continue
            if p.phase != "canary":
                continue
            holder = self.lease(p.model)
            challenger = self.registry.alias(p.model, "challenger")
            if holder is None or holder.version != p.version or challenger != p.version:
                why = (f"its canary was no longer in place when the promote function resumed "
                       f"(lease: {holder.version if holder else 'none'}, challenger: "
                       f"{challenger or 'none'})")
                log.warning("%s v%s: %s", p.model, p.version, why)
                self._record(replace(p, phase="abandoned", reason=why,
                                     finished=iso(now_utc())))
                if holder is not None and holder.version == p.version:
                    self._release(holder)
                continue
            self._bake_async(p.model, p.version)
            resumed.append((p.model, p.version))
        return resumed

    def _emit(self, type_: str, data: dict[str, Any]) -> ev.Event:
        from driftloop.bus import make_producer, publish

        event = ev.new_event(type_, SOURCE, data, datacontenttype=ev.JSON, model=data["model"])
        try:
            with self._lock:
                if self._producer is None:
                    self._producer = make_producer(self.settings)
                producer = self._producer
            publish(producer, topics.EVENTS, [event], key=data["model"])
        except Exception as e:
            log.error("could not emit %s for %s: %s", type_, data["model"], e)
        return event
