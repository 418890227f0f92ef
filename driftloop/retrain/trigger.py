"""The retrain-trigger service: events in, policy decisions out, training runs started.

Accepts, over HTTP: CloudEvents (``drift.detected``, PingSource ticks, labeled records
from the KafkaSource on ``driftloop.labeled``), a manual request
(``{"model": M, "params": {...}}``), and Alertmanager webhook JSON. Each is turned into
``Signals``, decided by ``driftloop.policy.decide`` against the run store, and a positive
decision claims the next start in the store (create-if-absent), records a run, starts it
on the policy's backend and emits ``io.driftloop.retrain.requested.v1`` with the fired
rules as reasons. Every replica decides on the same stored history and only one claim of
a start succeeds, so a burst of events within the cooldown starts one run however many
replicas receive it.

The feedback-volume rule counts usable labels: labeled records (feedback matched to a
prediction) that carry a truth, once per feedback (source, id), each counted label stored
as its own object (exact across restarts and replicas). Raw feedback events are not
counted: they may be repeated, reward-only or match no prediction.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from driftloop import events as ev
from driftloop.blob import BlobStore, open_store
from driftloop.errors import (
    BadRequest,
    DriftloopError,
    FieldError,
    NotFound,
    Unavailable,
)
from driftloop.function_service import FunctionService, Routes, combine
from driftloop.http import Request, Response
from driftloop.policy import Decision, Policy, Signals, decide, load_policy, policy_models
from driftloop.publisher import EventPublisher
from driftloop.retrain.backends import Backend, TrainingRequest, backend_for
from driftloop.retrain.state import Run, RunStore, Start, iso, new_run_id, now_utc
from driftloop.retrain.trigger_input import (
    manual_request,
    model_of,
    parse_alerts,
    usable_label,
)
from driftloop.settings import Settings

log = logging.getLogger("driftloop.retrain")
SOURCE = "driftloop/retrain-trigger"
START_ATTEMPTS = 5
"""How often a decision is retaken after another replica claimed the same start."""


ROUTES = Routes(
    name="retrain-trigger",
    post="POST a CloudEvent, an Alertmanager webhook or a retrain request",
    get_prefixes=("/runs/",),
)


class RetrainTrigger(FunctionService):
    """Everything behind the retrain-trigger function; one instance per process."""

    routes = ROUTES

    def __init__(
        self,
        settings: Settings,
        *,
        store: BlobStore | None = None,
        publisher: EventPublisher | None = None,
    ) -> None:
        self.settings = settings
        self.store = store or open_store(settings.resolved_blob_url, settings)
        self.runs = RunStore(self.store)
        self.publisher = publisher or EventPublisher(settings)
        self._lock = threading.Lock()
        self._model_locks: dict[str, threading.Lock] = {}
        self._backends: dict[str, Backend] = {}
        self._policies: dict[str, tuple[int, Policy]] = {}

    def close(self) -> None:
        self.publisher.close()

    # ------------------------------------------------------------ the edge's hooks

    def get(self, request: Request) -> Response:
        """``GET /runs/<model>``: the model's runs, oldest first."""
        model = request.path.rstrip("/").split("/")[-1]
        return Response.json(200, [r.to_dict() for r in self.runs.runs(model_of({"model": model}))])

    def on_events(self, events: list[ev.Event]) -> Response:
        return combine([self.on_event(e) for e in events])

    def on_json(self, doc: dict[str, Any]) -> Response:
        """An Alertmanager webhook (``alerts``), else a manual retrain request."""
        if "alerts" in doc:
            return Response.json(200, self.on_alerts(doc))
        model, params = manual_request(doc)
        out = self.evaluate(
            Signals(model=model, now=now_utc(), trigger="manual", manual=True), params=params
        )
        return Response.json(202 if out.get("run_id") else 200, out)

    def on_event(self, event: ev.Event) -> tuple[int, dict[str, Any]]:
        data = event.data if isinstance(event.data, Mapping) else {}
        key = f"{event.source}\x1f{event.id}"
        if event.type == ev.DRIFT_DETECTED:
            drift = ev.DriftDetectedData.parse(data)
            share = drift.share_drifted
            out = self.evaluate(
                Signals(
                    model=model_of(data, event),
                    now=now_utc(),
                    trigger="drift",
                    event_key=key,
                    drift_detected=bool(data.get("dataset_drift", True)),
                    drift_share=share,
                )
            )
        elif event.type == ev.PING:
            out = self.on_schedule(data, key)
        elif event.type == ev.LABELED:
            out = self.on_label(event)
        elif event.type == ev.FEEDBACK:
            fb = ev.FeedbackData.parse(data)
            out = {
                "model": fb.model,
                "counted": False,
                "reason": "raw feedback is not counted (it may repeat, carry only a reward "
                "or match no prediction); the volume rule counts labeled records",
            }
        else:
            raise BadRequest(
                f"event type {event.type!r} does not trigger retraining",
                fields=[FieldError("type", "supported", "unsupported event type")],
            )
        return (202 if out.get("run_id") else 200), out

    # ------------------------------------------------------------ triggers

    def policy(self, model: str) -> Policy:
        """The model's policy, re-read when its file changes (feedback calls this a lot)."""
        path = self.settings.policy_dir / f"{model}.yaml"
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            stamp = -1
        hit = self._policies.get(model)
        if hit is not None and hit[0] == stamp and stamp != -1:
            return hit[1]
        policy = load_policy(self.settings.policy_dir, model)
        self._policies[model] = (stamp, policy)
        return policy

    def on_label(self, event: ev.Event) -> dict[str, Any]:
        """Count one labeled record once per feedback (source, id) when it is usable;
        evaluate the policy once the volume rule could fire."""
        label = usable_label(event)
        if isinstance(label, str):
            return {"counted": False, "reason": label}
        model, label_key = label
        try:
            policy = self.policy(model)
        except NotFound:
            return {"model": model, "counted": False, "reason": "the model has no policy"}
        rule = policy.triggers.feedback_volume
        if rule is None:
            return {
                "model": model,
                "counted": False,
                "reason": "the policy has no feedback_volume rule",
            }
        generation = self.runs.generation(model)
        counted = self.runs.count_label(model, label_key, generation)
        count = self.runs.label_count(model, generation)
        if count < rule.min_events:  # (a redelivery past the threshold evaluates too: the
            # delivery that crossed it may have died before its decision)
            return {
                "model": model,
                "counted": counted,
                "feedback_since_training": count,
                "threshold": rule.min_events,
            }
        return self.evaluate(Signals(model=model, now=now_utc(), trigger="feedback"))

    def on_schedule(self, data: Mapping[str, Any], key: str) -> dict[str, Any]:
        if data.get("task") == "inputs-retention":
            from driftloop.retrain.retention import expire_all

            reports = expire_all(self.store, self.settings.policy_dir, now=now_utc())
            return {
                "trigger": "schedule",
                "task": "inputs-retention",
                "results": [r.to_dict() for r in reports],
            }
        wanted = data.get("models")
        models = wanted if isinstance(wanted, list) else policy_models(self.settings.policy_dir)
        results = []
        for m in models:
            try:
                results.append(
                    self.evaluate(
                        self._observed(
                            Signals(
                                model=model_of({"model": m}),
                                now=now_utc(),
                                trigger="schedule",
                                event_key=f"{key}\x1f{m}",
                                schedule_tick=True,
                            )
                        )
                    )
                )
            except DriftloopError as e:
                results.append({"model": m, "status": e.status, **e.to_dict()})
        started = [r["run_id"] for r in results if r.get("run_id")]
        return {
            "trigger": "schedule",
            "results": results,
            "run_id": started[0] if started else None,
        }

    def on_alerts(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """Alertmanager's webhook: firing alerts grouped per model, one decision each.

        A malformed webhook is refused whole (400, every broken field named); a firing
        alert without a ``model`` label is about no model and is listed as ignored.
        """
        firing, ignored = parse_alerts(doc)
        per_model: dict[str, set[str]] = {}
        keys: dict[str, str] = {}
        for model, trigger, key in firing:
            per_model.setdefault(model, set()).add(trigger)
            keys[model] = key
        results = []
        for model, triggers in sorted(per_model.items()):
            try:
                results.append(
                    self.evaluate(
                        self._observed(
                            Signals(
                                model=model,
                                now=now_utc(),
                                trigger="alert:" + ",".join(sorted(triggers)),
                                event_key=keys[model],
                                alerts=frozenset(triggers),
                            )
                        )
                    )
                )
            except DriftloopError as e:
                results.append({"model": model, "status": e.status, **e.to_dict()})
        return {"trigger": "alertmanager", "results": results, "ignored": ignored}

    def _observed(self, s: Signals) -> Signals:
        """Signals with quality, the champion's estimated quality and p99 latency from
        Prometheus, when it answers."""
        from driftloop.monitoring.prom import PrometheusClient

        try:
            policy = self.policy(s.model)
        except NotFound:
            return s
        prom = PrometheusClient(self.settings.resolved_prometheus_url, timeout_s=2.0)
        try:
            q = prom.query(f'driftloop_quality{{model="{s.model}",metric="{policy.metric}"}}')
            n = prom.query(
                f'driftloop_quality_samples{{model="{s.model}",metric="{policy.metric}"}}'
            )
            est = prom.query(f'driftloop_quality_estimated{{model="{s.model}"}}')
            est_n = prom.query(f'driftloop_quality_estimated_samples{{model="{s.model}"}}')
            lat = prom.query(
                "histogram_quantile(0.99, sum by (le) (rate("
                f'driftloop_model_latency_seconds_bucket{{model="{s.model}"}}[5m])))'
            )
        except (Unavailable, DriftloopError) as e:
            log.info("no Prometheus signals for %s: %s", s.model, e)
            return s
        finally:
            prom.close()
        champion = self._champion(s.model)
        qv = [x for x in q if x.labels.get("version") == champion] or q
        nv = [x for x in n if x.labels.get("version") == champion] or n
        # the estimate is the champion's only: another version's says nothing about it
        eq = [x for x in est if x.labels.get("version") == champion]
        eqn = [x for x in est_n if x.labels.get("version") == champion]
        p99 = lat[0].value if lat and lat[0].value == lat[0].value else None
        return replace(
            s,
            quality=qv[0].value if qv else None,
            quality_samples=int(nv[0].value) if nv else None,
            estimated_quality=eq[0].value if eq else None,
            estimated_quality_samples=int(eqn[0].value) if eqn else None,
            latency_p99_s=p99,
        )

    def _champion(self, model: str) -> str | None:
        from driftloop.registry import Registry

        try:
            return Registry(self.store).alias(model, "champion")
        except (ValueError, DriftloopError):
            return None

    def _lock_for(self, model: str) -> threading.Lock:
        with self._lock:
            return self._model_locks.setdefault(model, threading.Lock())

    # ------------------------------------------------------------ decide and start

    def evaluate(self, s: Signals, *, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Decide for one model and act on it; returns the decision (and run id).

        The decision is taken on the stored history; acting on it means creating the next
        start object. When another replica created it first, the history is read again
        and the decision retaken (it is then usually held back by the cooldown).
        """
        policy = self.policy(s.model)
        with self._lock_for(s.model):  # one claim per model at a time in this process
            for _ in range(START_ATTEMPTS):
                history = self.runs.history(
                    s.model,
                    now=s.now,
                    timeout_s=policy.training.timeout_s,
                    dedup_window_s=policy.limits.dedup_window_s,
                )
                if policy.triggers.feedback_volume is not None:
                    s = replace(
                        s,
                        feedback_since_training=self.runs.label_count(s.model, history.generation),
                    )
                decision = decide(policy, s, history)
                if not decision.retrain:
                    log.info("%s", decision.explain())
                    return {"decision": decision.to_dict(), "run_id": None}
                run = Run(
                    model=s.model,
                    run_id=new_run_id(s.now),
                    status="requested",
                    requested_at=iso(s.now),
                    trigger=s.trigger,
                    reasons=tuple(decision.reasons()),
                    backend=self.settings.retrain_backend or policy.training.backend,
                )
                if self.runs.claim_start(
                    Start(
                        model=s.model,
                        generation=history.generation + 1,
                        run_id=run.run_id,
                        requested_at=run.requested_at,
                        trigger=s.trigger,
                        event_key=s.event_key,
                        manual=s.manual,
                    )
                ):
                    break
                log.info(
                    "another replica started run %d of %s first; deciding again",
                    history.generation + 1,
                    s.model,
                )
            else:
                raise Unavailable(
                    f"could not claim a training start of {s.model!r}: other "
                    "replicas kept starting runs"
                )
            self.runs.put(run)
        log.info("%s (run %s)", decision.explain(), run.run_id)
        return self.start(policy, run, decision, params=params)

    def start(
        self,
        policy: Policy,
        run: Run,
        decision: Decision,
        *,
        params: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        try:
            backend = self.backend(run.backend)
            handle = backend.start(TrainingRequest(run.model, run.run_id, dict(params or {})))
        except DriftloopError as e:
            self.runs.update(
                run.model, run.run_id, status="failed", error=e.message, finished_at=iso(now_utc())
            )
            raise
        except Exception as e:  # the backend could not start the run: recorded, then 503
            self.runs.update(
                run.model,
                run.run_id,
                status="failed",
                error=f"{type(e).__name__}: {e}",
                finished_at=iso(now_utc()),
            )
            raise Unavailable(f"could not start training on {run.backend}: {e}") from e
        self.runs.update(run.model, run.run_id, handle=handle)
        event = self.emit_requested(run, decision)
        return {
            "decision": decision.to_dict(),
            "run_id": run.run_id,
            "backend": run.backend,
            "handle": handle,
            "event_id": event.id,
        }

    def backend(self, name: str) -> Backend:
        if name not in self._backends:
            self._backends[name] = backend_for(name, self.settings, self.runs)
        return self._backends[name]

    def emit_requested(self, run: Run, decision: Decision) -> ev.Event:
        data = ev.RetrainRequestedData(
            model=run.model,
            run_id=run.run_id,
            reasons=decision.reasons(),
            trigger=run.trigger,
            backend=run.backend,
            explain=decision.explain(),
        )
        return self.publisher.publish(
            ev.new_event(
                ev.RETRAIN_REQUESTED, SOURCE, data, datacontenttype=ev.JSON, model=run.model
            ),
            key=run.model,
        )


__all__ = ["ROUTES", "SOURCE", "RetrainTrigger", "parse_alerts", "usable_label"]
