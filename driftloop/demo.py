"""``driftloop demo``: the loop end to end on the embedded defaults.

Brings the local stack up (or uses the running one), then runs each step of ``STEPS``
in order; a step shows what flows where and returns figures for the final summary.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from driftloop import events as ev
from driftloop import quality, topics
from driftloop.archive import archived_keys
from driftloop.blob import open_store
from driftloop.errors import BadRequest
from driftloop.settings import Settings


@dataclass
class DemoContext:
    settings: Settings
    console: Console
    endpoints: dict[str, str]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def kafka_settings(self) -> Settings:
        return self.settings.model_copy(update={"kafka_bootstrap": self.endpoints["kafka"]})


def progress_bar(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console)


def count_topic(settings: Settings, topic: str, predicate: Callable[[Any], bool]) -> int:
    """Records in ``topic`` (all partitions, from the start) that match ``predicate``."""
    from kafka import KafkaConsumer, TopicPartition

    from driftloop.bus import client_config

    consumer = KafkaConsumer(**client_config(settings, "demo-count"), group_id=None,
                             enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        n = 0
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < end[tp] for tp in parts) and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=500).values():
                n += sum(1 for r in recs if predicate(r))
        return n
    finally:
        consumer.close()


def step_feedback(ctx: DemoContext, n: int = 300) -> None:
    """Apps POST feedback in the three CloudEvents modes; it lands in Kafka and the blob store."""
    url = ctx.endpoints["feedback-intake"]
    source = f"demo-app-{uuid.uuid4().hex[:6]}"
    models = ("digits", "ocr", "speech", "faces")
    evs = [ev.new_event(ev.FEEDBACK, source,
                        {"prediction_id": f"pred-{i}", "model": models[i % len(models)],
                         "truth": i % 10})
           for i in range(n)]
    accepted = 0
    with progress_bar(ctx.console) as bar, httpx.Client(base_url=url, timeout=30) as client:
        task = bar.add_task("posting feedback", total=n)
        for i in range(0, n, 10):
            chunk = evs[i:i + 10]
            if i % 30 == 0:  # a batch of ten
                r = client.post("/", headers={"content-type": ev.BATCH},
                                content=json.dumps([ev.to_structured(e) for e in chunk]))
                accepted += sum(1 for x in r.json()["results"] if x["status"] == 202)
            else:
                for j, e in enumerate(chunk):
                    if j % 2:
                        r = client.post("/", headers={"content-type": ev.STRUCTURED},
                                        content=json.dumps(ev.to_structured(e)))
                    else:
                        headers, body = ev.to_http_binary(e)
                        r = client.post("/", headers=headers, content=body)
                    accepted += r.status_code == 202
            bar.advance(task, len(chunk))
    in_kafka = count_topic(ctx.kafka_settings, topics.FEEDBACK,
                           lambda r: dict(r.headers).get("ce_source") == source.encode())
    store = open_store(ctx.settings.resolved_blob_url, ctx.settings)
    archived = 0
    deadline = time.monotonic() + 60
    with ctx.console.status("waiting for the archive"):
        while time.monotonic() < deadline:
            archived = sum(
                line.count(f'"source":"{source}"'.encode())
                for k in archived_keys(store, "feedback/")
                for line in [store.get(k)]
            )
            if archived >= accepted:
                break
            time.sleep(1)
    table = Table("feedback events", "count")
    table.add_row("posted", str(n))
    table.add_row("accepted (202)", str(accepted))
    table.add_row(f"in Kafka {topics.FEEDBACK}", str(in_kafka))
    table.add_row(f"in the blob store ({store.url}/feedback/)", str(archived))
    ctx.console.print(table)
    ctx.summary["feedback"] = {"posted": n, "accepted": accepted, "kafka": in_kafka,
                               "archived": archived}


def step_preprocess(ctx: DemoContext) -> None:
    """Raw audio and images flow through Flink's preprocess into model-ready records."""
    if "flink" not in ctx.endpoints:
        ctx.console.print("flink is not part of the stack (run make setup); skipped")
        return
    from driftloop.commands.flink import send_samples

    started = time.monotonic()
    with ctx.console.status("raw inputs → Flink preprocess → driftloop.preprocessed.*"):
        send_samples(audio=4, images=4, wait_s=180.0)
    ctx.summary["preprocess"] = {"inputs": 8, "seconds": round(time.monotonic() - started, 1)}


def step_labeled(ctx: DemoContext) -> None:
    """Flink joins each prediction with its feedback: labeled records with their quality."""
    predictions = {p["id"]: p for p in ctx.summary.get("predictions", [])}
    if "flink" not in ctx.endpoints or not predictions:
        ctx.console.print("needs flink and the predictions step; skipped")
        return
    from kafka import KafkaConsumer

    from driftloop.bus import client_config

    consumer = KafkaConsumer(topics.LABELED, **client_config(ctx.kafka_settings, "demo-labeled"),
                             group_id=None, auto_offset_reset="earliest",
                             isolation_level="read_committed", enable_auto_commit=False)
    found: dict[str, Any] = {}
    deadline = time.monotonic() + 120
    try:
        with ctx.console.status("waiting for driftloop.labeled"):
            while len(found) < len(predictions) and time.monotonic() < deadline:
                for recs in consumer.poll(timeout_ms=500).values():
                    for r in recs:
                        try:
                            e = ev.from_kafka(r.value, r.headers, r.key)
                        except BadRequest:
                            continue
                        pid = e.data.get("prediction_id") if isinstance(e.data, dict) else None
                        if pid in predictions:
                            found[pid] = e.data
    finally:
        consumer.close()
    table = Table("model", "prediction id", "quality (from the join)")
    for pid, p in predictions.items():
        data = found.get(pid)
        q = "-" if data is None else json.dumps(data.get("quality"))
        table.add_row(p["model"], pid, q)
    ctx.console.print(table)
    ctx.summary["labeled"] = {"expected": len(predictions), "joined": len(found)}


def steps() -> list[Callable[[DemoContext], None]]:
    """The demo's steps in order; each area's step is imported only when the demo runs."""
    from driftloop.monitoring.demo import step_drift
    from driftloop.retrain.demo import demo_loop
    from driftloop.serving.demo import step_predictions

    # The loop runs before the drift-alert step: that step's alert also reaches
    # retrain-trigger, and the policy's cooldown would then hold the loop's trigger back.
    return [step_feedback, step_preprocess, step_predictions, step_labeled, demo_loop,
            step_drift]


def print_summary(ctx: DemoContext) -> None:
    """What flowed where, in one table at the end."""
    s = ctx.summary
    table = Table("step", "result")
    if fb := s.get("feedback"):
        table.add_row("feedback", f"{fb['accepted']}/{fb['posted']} accepted, "
                      f"{fb['kafka']} in Kafka, {fb['archived']} archived")
    if pre := s.get("preprocess"):
        table.add_row("preprocess", f"{pre['inputs']} raw inputs preprocessed by Flink "
                      f"in {pre['seconds']} s")
    for p in s.get("predictions", []):
        metric = quality.spec(p["model"]).metric
        table.add_row(f"predict {p['model']}", f"v{p['version']} {metric} "
                      f"{p['quality']:.3f}, feedback {p['feedback_status']}")
    if lab := s.get("labeled"):
        table.add_row("join", f"{lab['joined']}/{lab['expected']} predictions labeled")
    if loop := s.get("loop"):
        q = loop.get("quality") or {}
        accuracy = ", ".join(f"{k} {v:.3f}" for k, v in q.items() if isinstance(v, float))
        timings = ", ".join(f"{k} {v:.1f}" for k, v in (loop.get("timings") or {}).items()
                            if isinstance(v, float))
        table.add_row("loop", f"v{loop.get('champion_before')} → v{loop.get('new_version')} "
                      f"({loop.get('phase')}); accuracy {accuracy}; seconds: {timings}")
    if drift := s.get("drift"):
        table.add_row("drift alert", f"{drift['model']} share drifted "
                      f"{drift['share_before']:.0%} → {drift['share_after']:.0%}, alert "
                      f"{drift['alert']}, report {drift['report']}")
    ctx.console.rule("summary")
    ctx.console.print(table)


def run(settings: Settings, console: Console) -> dict[str, Any]:
    from driftloop.local.stack import Stack

    stack = Stack(settings)
    if not stack.running():
        with console.status("starting the local stack") as spinner:
            stack.up(progress=lambda msg: spinner.update(msg))
    statuses = stack.status()
    unhealthy = [s.name for s in statuses if not s.healthy]
    if unhealthy:
        raise RuntimeError(f"unhealthy components: {', '.join(unhealthy)} "
                           f"(logs in {stack.log_dir})")
    ctx = DemoContext(settings, console, {s.name: s.endpoint for s in statuses})
    for step in steps():
        console.rule(step.__doc__.splitlines()[0] if step.__doc__ else step.__name__)
        step(ctx)
    print_summary(ctx)
    return ctx.summary
