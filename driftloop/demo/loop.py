"""The demo's loop step, shown: drift → alert/drift event → retrain → canary → promotion.

``run_loop`` drives one whole loop with the same services the functions run and reports
quality before, during and after, versions, timings and where the training data came from;
``step_loop`` is the demo's step (through the stack's own functions when they run,
in-process otherwise), and ``bench/loop.py`` times ``run_loop``.

The traffic is an app's (``driftloop.demo.traffic``): predictions over the model server's
V2 REST endpoint, the labels to feedback-intake. With feedback-intake and Flink's join in
the stack, the labeled records are the join's (prediction events carry ``input_ref``, the
model server's kept copy of the input), and the training run reads its pixels from the
kept inputs: the report's ``counts`` follow them from predictions to ``n_feedback_train``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from driftloop import events as ev
from driftloop import topics
from driftloop.blob import BlobStore, open_store
from driftloop.demo.context import DemoContext
from driftloop.demo.estimated import beside, checked_beside, estimated, merged, realized
from driftloop.demo.traffic import Traffic, TrafficResult, await_joined, digit_samples
from driftloop.registry import Registry
from driftloop.settings import Settings

__all__ = ["LoopReport", "run_loop", "stack_settings", "step_loop"]

Progress = Callable[[str], None]


@dataclass
class LoopReport:
    """What one loop did: quality before/during/after, versions, timings (seconds)."""

    champion_before: str
    new_version: str | None = None
    phase: str = ""
    reason: str = ""
    quality: dict[str, float] = field(default_factory=dict)
    canary_split: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    decision: str = ""
    labels_from: str = ""
    """``join`` (Flink joined REST predictions with feedback) or ``app`` (no join: the app
    wrote labeled records itself)."""
    counts: dict[str, int] = field(default_factory=dict)
    """predictions (over REST), feedback (accepted by intake), labeled and
    labeled_with_input_ref (the join's archived records of the loop's traffic before the
    trigger), labeled_usable_in_archive, and the run's n_feedback_train / n_recent."""
    realized: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per window of the loop's traffic (before, drifted, during_canary, after): the
    accuracy per version the app measured from the truth."""
    estimated: dict[str, dict[str, float]] = field(default_factory=dict)
    """The same windows: drift-check's estimated accuracy per version (its stored
    calibration over the confidences of the answers), known before any label."""
    checked: dict[str, Any] = field(default_factory=dict)
    """drift-check's own answer on its window: ``quality`` and ``quality_estimated``."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "champion_before": self.champion_before,
            "new_version": self.new_version,
            "phase": self.phase,
            "reason": self.reason,
            "quality": self.quality,
            "canary_split": self.canary_split,
            "timings": self.timings,
            "decision": self.decision,
            "labels_from": self.labels_from,
            "counts": self.counts,
            "realized": self.realized,
            "estimated": self.estimated,
            "checked": self.checked,
        }


def _noop(msg: str) -> None:
    pass


def run_loop(
    settings: Settings,
    *,
    progress: Progress = _noop,
    n_drift: int = 240,
    via: str = "in-process",
    trigger_url: str | None = None,
    intake_url: str | None = None,
    timeout_s: float = 300.0,
) -> LoopReport:
    """One whole loop on the given services (Kafka, blob store, model server).

    ``intake_url``: feedback-intake of a stack whose Flink joins predictions with feedback
    (the labeled records, and so the training data, are the join's); None: the app writes
    labeled records itself.

    ``via="in-process"`` runs retrain-trigger and promote in this process (the same code
    the functions run); ``via="stack"`` posts the trigger to the stack's retrain-trigger
    (``trigger_url``) and lets its dispatcher carry model.trained to its promote.
    """
    from driftloop.http import Request
    from driftloop.promotion.service import PromotionService
    from driftloop.retrain.pipeline import _save_profile
    from driftloop.retrain.state import FINISHED, RunStore
    from driftloop.retrain.trainers import trainer_for
    from driftloop.retrain.trigger import RetrainTrigger
    from driftloop.serving.bootstrap import ensure_models

    store = open_store(settings.resolved_blob_url, settings)
    registry = Registry(store)
    ensure_models(registry, ["digits"])
    champion = registry.alias("digits", "champion") or registry.versions("digits")[-1]
    trainer = trainer_for("digits")
    if not store.exists(f"models/digits/{champion}/reference_profile.json"):
        _save_profile(
            store,
            trainer,
            "digits",
            champion,
            registry.artifact("digits", champion),
            trainer.base()[1],
        )
    report = LoopReport(champion_before=champion, labels_from="join" if intake_url else "app")
    traffic = Traffic(settings, settings.resolved_serving_url, intake_url=intake_url, store=store)
    promoter = PromotionService(settings, store=store) if via == "in-process" else None
    trigger = RetrainTrigger(settings, store=store) if via == "in-process" else None
    opened: list[PromotionService] = []  # closed with the rest, however the loop ends
    runs = RunStore(store)
    # Runs before the traffic: a stack whose drift-check runs on its own schedule may see
    # the drift (and start the run) before the loop asks.
    known = {r.run_id for r in runs.runs("digits")}
    try:
        progress(f"healthy traffic to digits v{champion}")
        healthy = traffic.send(digit_samples(60, rotate=False, seed=11))
        report.quality["before"] = healthy.accuracy
        progress("injecting drift: digits rotated by 90°")
        drifted = traffic.send(digit_samples(n_drift, rotate=True, seed=12))
        report.quality["drifted"] = drifted.accuracy
        report.counts.update(predictions=traffic.predicted, feedback=traffic.feedback_sent)
        if intake_url:
            progress(
                f"{traffic.predicted} predictions over REST, {traffic.feedback_sent} "
                "feedback accepted; waiting for Flink's join to archive them"
            )
            joined = await_joined(store, healthy.ids + drifted.ids, timeout_s=timeout_s)
            report.counts.update(
                labeled=joined.labeled, labeled_with_input_ref=joined.with_input_ref
            )
            progress(
                f"join: {joined.labeled}/{joined.expected} labeled, "
                f"{joined.with_input_ref} with input_ref"
            )
            if joined.labeled < joined.expected:
                raise RuntimeError(
                    f"the join archived {joined.labeled} of {joined.expected} "
                    f"labeled records in {timeout_s:g} s (e.g. {joined.missing})"
                )
        report.counts["labeled_usable_in_archive"] = _usable_labeled(store)
        event = _drift_event(settings, store, progress, report)
        batches = {"before": healthy, "drifted": drifted}
        report.estimated.update(estimated(settings, store, champion, batches))
        report.realized.update(realized(batches))
        t0 = time.monotonic()
        run_id = None
        if event is None:
            report.decision = "drift-check found no drift"
        elif trigger is not None:
            progress("drift.detected → retrain-trigger")
            headers, body = ev.to_http_binary(event)
            answer = json.loads(trigger.handle(Request.post(headers, body)).body)
            report.decision = answer["decision"]["explain"]
            run_id = answer.get("run_id") or _new_run(runs, known, timeout_s=0)
        else:
            progress("drift.detected on driftloop.events → dispatcher → retrain-trigger")
            run_id = _new_run(runs, known, timeout_s=30)
            if run_id:
                report.decision = "; ".join(
                    f"{r['rule']}: {r['detail']}" for r in runs.get("digits", run_id).reasons
                )
        if not run_id:
            progress(
                f"no run started ({report.decision or 'policy held it back'}); "
                "asking by hand instead"
            )
            if trigger is not None:
                answer = json.loads(
                    trigger.handle(
                        Request.post({"content-type": "application/json"}, b'{"model": "digits"}')
                    ).body
                )
            else:
                import httpx

                from driftloop.auth import client_headers

                answer = httpx.post(
                    trigger_url or "",
                    json={"model": "digits"},
                    headers=client_headers(settings),
                    timeout=30,
                ).json()
            run_id = answer.get("run_id")
            report.decision = answer["decision"]["explain"]
            if not run_id:
                raise RuntimeError(f"no training run: {report.decision}")
        progress(f"training run {run_id}")
        # A run the stack's own drift-check started earlier: time the loop from its request.
        t0 = min(t0, _monotonic_at(runs.get("digits", run_id).requested_at))
        run = _wait(
            lambda: (r := runs.get("digits", run_id)).status in FINISHED and r,
            timeout_s,
            f"training run {run_id}",
        )
        report.timings["trigger_to_trained_s"] = time.monotonic() - t0
        if run.status != "succeeded":
            report.phase = "failed" if run.status == "failed" else "skipped"
            report.reason = str(run.error or run.skip_reason)
            return report
        version = str(run.version)
        report.new_version = version
        metrics = registry.get("digits", version).metrics
        for k in ("n_feedback_train", "n_recent"):
            report.counts[k] = int(metrics.get(k, 0))
        progress(
            f"trained on {report.counts['n_feedback_train']} feedback rows "
            f"(+{report.counts['n_recent']} recent for evaluation)"
        )
        progress(f"v{version} registered; promote: gate, canary, bake")
        if promoter is not None:
            trained = _trained_event(settings, run_id)
            promoter.start(trained.data["model"], trained.data["version"])
        states = PromotionService(settings, store=store, background=False)
        opened.append(states)
        split: dict[str, int] = {}
        during: list[float] = []
        canary_batches: list[TrafficResult] = []
        rotated = digit_samples(2000, rotate=True, seed=13)
        i = 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            p = states.state("digits", version)
            if p is not None and p.phase not in ("gate", "canary"):
                break
            if p is not None and p.phase == "canary":
                r = traffic.send(rotated[i % 1900 :][:20])
                during.append(r.accuracy)
                canary_batches.append(r)
                for v, (_, n) in r.by_version.items():
                    split[v] = split.get(v, 0) + n
                i += 20
            time.sleep(0.2)
        p = states.state("digits", version)
        report.phase = p.phase if p else "unknown"
        report.reason = p.reason if p else ""
        report.timings["trigger_to_final_s"] = time.monotonic() - t0
        report.canary_split = split
        if during:
            report.quality["during_canary"] = sum(during) / len(during)
        if report.phase == "promoted":
            # Serving all traffic: the champion endpoint answers with the new version.
            _wait(
                lambda: traffic.client.predict("digits", [rotated[0][0]]).version == version,
                60,
                "the champion endpoint to serve the new version",
            )
            report.timings["trigger_to_serving_s"] = time.monotonic() - t0
        after = traffic.send(digit_samples(100, rotate=True, seed=14))
        report.quality["after"] = after.accuracy
        batches = {"after": after}
        if canary_batches:
            batches["during_canary"] = merged(canary_batches)
        report.estimated.update(estimated(settings, store, champion, batches))
        report.realized.update(realized(batches))
        progress(f"{report.phase}: quality after {after.accuracy:.3f}")
        return report
    finally:
        traffic.close()
        for service in (promoter, trigger, *opened):
            if service is not None:
                service.close()


def _monotonic_at(rfc3339: str) -> float:
    """The monotonic clock's reading at a wall-clock time (now when unreadable)."""
    from datetime import datetime

    try:
        wall = datetime.fromisoformat(rfc3339).timestamp()
    except (TypeError, ValueError):
        return time.monotonic()
    return time.monotonic() - max(0.0, time.time() - wall)


def _usable_labeled(store: BlobStore) -> int:
    """Labeled digits records in the archive a training run could use now: those with a
    label and a way to the pixels (a kept input, or pixels in the truth)."""
    from driftloop.retrain.data import read_labeled

    n = 0
    for r in read_labeled(store, "digits"):
        truth = r.data.get("truth")
        if r.data.get("input_ref") or (isinstance(truth, dict) and truth.get("pixels")):
            n += 1
    return n


def _new_run(runs: Any, known: set[str], timeout_s: float) -> str | None:
    """The id of the first run that appears in the run store, not in ``known`` (the
    stack's own drift-check may have started it before the loop's check)."""
    deadline = time.monotonic() + timeout_s
    while True:
        fresh = [r.run_id for r in runs.runs("digits") if r.run_id not in known]
        if fresh:
            return str(fresh[0])
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.3)


def _drift_event(
    settings: Settings, store: BlobStore, progress: Progress, report: LoopReport
) -> ev.Event | None:
    """drift-check's own drift.detected on the current window (already on Kafka), or None
    when it found no drift. drift-check failing fails the loop: no event is invented.
    Its realized and estimated quality go to ``report.checked``."""
    from driftloop.monitoring.check import DriftCheckService

    check = DriftCheckService(settings, store=store)
    try:
        result = check.check("digits", None)
    finally:
        check.close()
    progress(f"drift-check: {result.get('verdict')}")
    report.checked = {
        "quality": result.get("quality", []),
        "quality_estimated": result.get("quality_estimated", []),
    }
    if result.get("event"):
        return _find_event(settings, result["event"]["id"])
    return None


def _find_event(settings: Settings, event_id: str) -> ev.Event:
    found = _scan(settings, lambda e: e.id == event_id)
    if found is None:
        raise RuntimeError(f"event {event_id} not found on {topics.EVENTS}")
    return found


def _trained_event(settings: Settings, run_id: str) -> ev.Event:
    found = _scan(
        settings,
        lambda e: (
            e.type == ev.MODEL_TRAINED
            and isinstance(e.data, dict)
            and e.data.get("run_id") == run_id
        ),
    )
    if found is None:
        raise RuntimeError(f"no model.trained event of run {run_id}")
    return found


def _scan(settings: Settings, match: Callable[[ev.Event], bool]) -> ev.Event | None:
    """The newest event on driftloop.events (last 10 minutes) that matches."""
    from driftloop.monitoring.window import read_topic

    w = read_topic(settings, topics.EVENTS, window_s=600, max_records=10_000)
    for r in reversed(w.records):
        if match(r.event):
            return r.event
    return None


def _wait(fn: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            got = fn()
        except Exception:
            got = None
        if got:
            return got
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


_LABELS_FROM = {
    "join": "Flink's join of REST predictions (with input_ref) and feedback-intake's feedback",
    "app": "the app itself (no Flink join in this stack): pixels in the truth",
}
_COUNT_NAMES = {
    "predictions": "predictions over V2 REST (before the trigger)",
    "feedback": "feedback accepted by feedback-intake",
    "labeled": "labeled records the join archived",
    "labeled_with_input_ref": "... of them with input_ref (kept input)",
    "labeled_usable_in_archive": "usable labeled records in the archive",
    "n_feedback_train": "training run: n_feedback_train",
    "n_recent": "training run: n_recent (evaluation)",
}


def stack_settings(ctx: DemoContext) -> Settings:
    """The demo's settings pointed at the running stack's Kafka, model server and
    monitoring."""
    settings = ctx.kafka_settings
    if "mlserver" in ctx.endpoints:
        settings = settings.model_copy(update={"serving_url": ctx.endpoints["mlserver"]})
    for name, fld in (("prometheus", "prometheus_url"), ("pushgateway", "pushgateway_url")):
        if name in ctx.endpoints:
            settings = settings.model_copy(update={fld: ctx.endpoints[name]})
    return settings


def step_loop(ctx: DemoContext) -> None:
    """The whole loop: drift, alert/drift event, retrain, canary, promotion."""
    from rich.table import Table

    settings = stack_settings(ctx)
    via = (
        "stack"
        if "retrain-trigger" in ctx.endpoints
        and "promote" in ctx.endpoints
        and "dispatcher" in ctx.endpoints
        else "in-process"
    )
    # Labels through the join need feedback-intake and Flink's join; without them the app
    # writes its labeled records itself (said so in the table).
    joined = "flink" in ctx.endpoints and "feedback-intake" in ctx.endpoints
    with ctx.console.status("closing the loop") as spinner:

        def progress(message: str) -> None:
            spinner.update(message)
            ctx.console.log(message)

        report = run_loop(
            settings,
            via=via,
            trigger_url=ctx.endpoints.get("retrain-trigger"),
            intake_url=ctx.endpoints["feedback-intake"] if joined else None,
            progress=progress,
        )
    table = Table("loop", "value")
    table.add_row("versions", f"v{report.champion_before} → v{report.new_version} ({report.phase})")
    table.add_row("decision", report.decision)
    table.add_row("labeled records from", _LABELS_FROM.get(report.labels_from, "-"))
    for k, n in report.counts.items():
        table.add_row(_COUNT_NAMES.get(k, k), str(n))
    for k, v in report.quality.items():
        table.add_row(f"accuracy {k}", f"{v:.3f}")
        if k in report.realized:
            table.add_row(
                f"  {k} per version",
                beside(report.realized[k], report.estimated.get(k, {})),
            )
    if report.checked:
        table.add_row("drift-check's window", checked_beside(report.checked))
    table.add_row(
        "canary split (requests)",
        ", ".join(f"v{k}: {n}" for k, n in sorted(report.canary_split.items())),
    )
    for k, v in report.timings.items():
        table.add_row(k.replace("_", " "), f"{v:.1f} s")
    table.add_row("outcome", report.reason[:200])
    ctx.console.print(table)
    ctx.summary["loop"] = report.to_dict()
