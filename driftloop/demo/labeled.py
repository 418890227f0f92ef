"""The demo's join step: Flink joins each prediction of the predictions step with its
feedback into a labeled record carrying the prediction's quality."""

from __future__ import annotations

import json
import time
from typing import Any

from rich.table import Table

from driftloop import events as ev
from driftloop import topics
from driftloop.demo.context import DemoContext
from driftloop.errors import BadRequest

__all__ = ["step_labeled"]


def step_labeled(ctx: DemoContext) -> None:
    """Flink joins each prediction with its feedback: labeled records with their quality."""
    predictions = {p["id"]: p for p in ctx.summary.get("predictions", [])}
    if "flink" not in ctx.endpoints or not predictions:
        ctx.console.print("needs flink and the predictions step; skipped")
        return
    from kafka import KafkaConsumer

    from driftloop.bus import client_config

    consumer = KafkaConsumer(
        topics.LABELED,
        **client_config(ctx.kafka_settings, "demo-labeled"),
        group_id=None,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
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
                        if isinstance(pid, str) and pid in predictions:
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
