"""The promote service: offline gate, canary, metric-guarded bake, promote or roll back.

``on_trained`` (a ``model.trained`` event) runs the gate at once and, when it passes,
starts the canary and bakes in a background thread (so the HTTP delivery returns within
its timeout); ``promote`` and ``rollback`` are what ops call by hand (``driftloop promote``
/ ``driftloop rollback``) and what the bake calls at its end — one code path. The state
of each promotion is kept in ``promotions/<model>/<version>.json`` in the blob store, so
a restarted function resumes a bake in progress.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from driftloop import events as ev
from driftloop import topics
from driftloop.blob import BlobStore, open_store
from driftloop.errors import BadRequest, DriftloopError, FieldError, NotFound
from driftloop.http import Response, error_response
from driftloop.naming import is_safe_segment, safe_segment
from driftloop.policy import Policy, load_policy
from driftloop.promotion import routing
from driftloop.promotion.gate import GateResult, run_gate
from driftloop.promotion.guard import GuardVerdict, Observer, judge
from driftloop.registry import Registry
from driftloop.retrain.state import iso, now_utc
from driftloop.settings import Settings

log = logging.getLogger("driftloop.promotion")
SOURCE = "driftloop/promote"
Phase = Literal["gate", "rejected", "canary", "promoted", "rolledback", "gated"]


@dataclass(frozen=True)
class Promotion:
    """One version's way through gate, canary and bake."""

    model: str
    version: str
    champion: str | None
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


def _model(value: Any) -> str:
    if not is_safe_segment(value):
        raise BadRequest(f"model: a valid model name is required (got {value!r})",
                         fields=[FieldError("model", "safe-name", "a valid model name")])
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

    # ------------------------------------------------------------ HTTP entry

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        try:
            if method == "GET" and path.rstrip("/") in ("/healthz", "/readyz"):
                return Response.json(200, {"status": "ok"})
            if method != "POST":
                return Response.json(405, {"error": "method_not_allowed",
                                           "message": "POST a model.trained CloudEvent"})
            results = []
            for event in ev.from_http(headers, body):
                if event.type != ev.MODEL_TRAINED:
                    raise BadRequest(f"event type {event.type!r} is not {ev.MODEL_TRAINED}",
                                     fields=[FieldError("type", "supported",
                                                        "only model.trained starts a promotion")])
                results.append(self.on_trained(event))
            return Response.json(202, results[0] if len(results) == 1 else results)
        except DriftloopError as e:
            return error_response(e)

    def on_trained(self, event: ev.Event) -> dict[str, Any]:
        data = ev.ModelTrainedData.parse(event.data)
        return self.start(data.model, data.version)

    # ------------------------------------------------------------ the flow

    def start(self, model: str, version: str) -> dict[str, Any]:
        """Gate now; canary and bake in the background (or inline when not background)."""
        model = _model(model)
        with self._lock:
            existing = self.state(model, version)
            if existing is not None and existing.phase != "gate":
                # A redelivered model.trained: report, don't redo.
                if existing.phase == "canary":
                    self._bake_async(model, version)
                return {"model": model, "version": version, "phase": existing.phase,
                        "duplicate": True}
            self.registry.get(model, version)
            policy = self.policy(model)
            champion = self.registry.alias(model, "champion")
            p = self.save(Promotion(model, version, champion, "gate", iso(now_utc())))
        t0 = time.perf_counter()
        if champion is None or champion == version:
            self.promote(model, version, reason="no champion to compare with")
            return {"model": model, "version": version, "phase": "promoted"}
        result = self.gate(policy, model, version, champion)
        p = replace(p, gate=result.to_dict(), timings={"gate_s": time.perf_counter() - t0})
        if not result.passed:
            self.save(replace(p, phase="rejected", reason=result.detail,
                              finished=iso(now_utc())))
            self._emit(ev.MODEL_ROLLEDBACK, {"model": model, "version": version,
                                             "restored_version": champion,
                                             "reason": f"offline gate: {result.detail}",
                                             "stage": "gate"})
            log.info("%s v%s rejected by the gate: %s", model, version, result.detail)
            return {"model": model, "version": version, "phase": "rejected",
                    "gate": result.to_dict()}
        if not policy.promotion.auto:
            self.save(replace(p, phase="gated", reason="passed the gate; auto promotion off"))
            return {"model": model, "version": version, "phase": "gated",
                    "gate": result.to_dict()}
        self.start_canary(policy, model, version, champion)
        self.save(replace(p, phase="canary", canary_started_ms=int(time.time() * 1000)))
        if self.background:
            self._bake_async(model, version)
            return {"model": model, "version": version, "phase": "canary",
                    "gate": result.to_dict(), "bake_s": self.bake_s(policy)}
        final = self.bake(model, version)
        return {"model": model, "version": version, "phase": final.phase,
                "gate": result.to_dict(), "reason": final.reason}

    def gate(self, policy: Policy, model: str, version: str, champion: str) -> GateResult:
        from driftloop.retrain.pipeline import load_eval_set
        from driftloop.retrain.trainers import trainer_for

        trainer = trainer_for(model)
        _, holdout = trainer.base()
        recent = load_eval_set(self.store, trainer,
                               self.registry.get(model, version).lineage.get("eval_set"))
        return run_gate(policy, self.registry.artifact(model, version),
                        self.registry.artifact(model, champion), holdout, recent, trainer)

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
            log.exception("bake of %s v%s failed; rolling back", model, version)
            try:
                self.rollback(model, reason="bake failed with an error")
            except Exception:
                log.exception("rollback of %s failed", model)

    def wait(self, model: str, version: str, timeout_s: float | None = None) -> Promotion | None:
        t = self._threads.get((model, version))
        if t is not None:
            t.join(timeout_s)
        return self.state(model, version)

    def bake(self, model: str, version: str) -> Promotion:
        """Watch the canary until the bake period ends or a check fails."""
        p = self.state(model, version)
        if p is None or p.phase != "canary":
            raise NotFound(f"{model} v{version} has no canary in progress")
        policy = self.policy(model)
        since = p.canary_started_ms or int(time.time() * 1000)
        observer = Observer(self.settings, model, policy.metric, since)
        ends = since / 1000.0 + self.bake_s(policy)
        verdict: GuardVerdict | None = None
        while True:
            final = time.time() >= ends
            stats = observer.observe([p.champion or "", version])
            verdict = judge(policy, stats[p.champion or ""], stats[version], final=final)
            p = self.save(replace(p, verdicts=(*p.verdicts, {"at": iso(now_utc()),
                                                              **verdict.to_dict()})))
            if policy.promotion.mode == "bandit":
                self._bandit_step(policy, model, p.champion or "", version, stats)
            if verdict.verdict != "wait" or final:
                break
            time.sleep(min(policy.promotion.poll_s, max(ends - time.time(), 0.05)))
        current = self.state(model, version)
        if current is not None and current.phase != "canary":
            return current  # promoted or rolled back by hand meanwhile
        if verdict.verdict == "ok":
            self.promote(model, version, reason=f"canary passed: {verdict.explain()}")
        else:
            self.rollback(model, reason=f"canary failed: {verdict.explain()}")
        return self.state(model, version) or p

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
        """Champion → ``version`` with 100% of traffic; the challenger alias is cleared."""
        model = _model(model)
        self.registry.get(model, version)
        policy = self.policy(model)
        previous = self.registry.alias(model, "champion")
        self.registry.set_alias(model, "champion", version, reason=reason)
        if self.registry.alias(model, "challenger") is not None:
            self.registry.clear_alias(model, "challenger")
        self.apply_routing(policy, routing.all_to(model, version))
        p = self.state(model, version) or Promotion(model, version, previous, "promoted",
                                                    iso(now_utc()))
        self.save(replace(p, phase="promoted", reason=reason, finished=iso(now_utc())))
        self._emit(ev.MODEL_PROMOTED, {"model": model, "version": version,
                                       "previous_version": previous, "reason": reason})
        log.info("%s v%s promoted (was v%s): %s", model, version, previous, reason)
        return {"model": model, "version": version, "previous_version": previous,
                "phase": "promoted"}

    def rollback(self, model: str, *, reason: str = "rolled back by hand") -> dict[str, Any]:
        """End a canary (challenger out, champion 100%), or, with no canary, restore the
        champion before the current one."""
        model = _model(model)
        policy = self.policy(model)
        champion = self.registry.alias(model, "champion")
        challenger = self.registry.alias(model, "challenger")
        if challenger is not None and challenger != champion:
            self.registry.clear_alias(model, "challenger")
            rolled, restored = challenger, champion
        else:
            moves = [c for c in self.registry.history(model, "champion")
                     if c.version == champion and c.previous]
            if champion is None or not moves:
                raise NotFound(f"{model} has no canary and no earlier champion to restore")
            rolled, restored = champion, moves[-1].previous
            self.registry.set_alias(model, "champion", restored, reason=reason)
        self.apply_routing(policy, routing.all_to(model, restored))  # type: ignore[arg-type]
        p = self.state(model, rolled) or Promotion(model, rolled, restored, "rolledback",
                                                   iso(now_utc()))
        self.save(replace(p, phase="rolledback", reason=reason, finished=iso(now_utc())))
        self._emit(ev.MODEL_ROLLEDBACK, {"model": model, "version": rolled,
                                         "restored_version": restored, "reason": reason})
        log.info("%s v%s rolled back to v%s: %s", model, rolled, restored, reason)
        return {"model": model, "version": rolled, "restored_version": restored,
                "phase": "rolledback", "reason": reason}

    def resume(self) -> list[tuple[str, str]]:
        """Restart the bakes a previous process left in the canary phase."""
        resumed = []
        for key in self.store.list("promotions/"):
            try:
                p = Promotion.from_dict(json.loads(self.store.get(key)))
            except (KeyError, ValueError, TypeError):
                continue
            if p.phase == "canary":
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
