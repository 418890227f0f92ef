"""The demo's feedback step: apps post feedback in the three CloudEvents modes, and it is
counted in Kafka and in the blob store's archive."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from rich.table import Table

from driftloop import events as ev
from driftloop import topics
from driftloop.archive import archived_keys
from driftloop.blob import open_store
from driftloop.catalogue import FAMILIES
from driftloop.demo.context import DemoContext, progress_bar
from driftloop.settings import Settings

__all__ = ["count_topic", "step_feedback"]

MODELS = tuple(FAMILIES)
"""The families the feedback events name, in turn."""


def count_topic(settings: Settings, topic: str, predicate: Callable[[Any], bool]) -> int:
    """Records in ``topic`` (all partitions, from the start) that match ``predicate``."""
    from kafka import KafkaConsumer, TopicPartition

    from driftloop.bus import client_config

    consumer = KafkaConsumer(
        **client_config(settings, "demo-count"), group_id=None, enable_auto_commit=False
    )
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
    evs = [
        ev.new_event(
            ev.FEEDBACK,
            source,
            {"prediction_id": f"pred-{i}", "model": MODELS[i % len(MODELS)], "truth": i % 10},
        )
        for i in range(n)
    ]
    accepted = 0
    with progress_bar(ctx.console) as bar, httpx.Client(base_url=url, timeout=30) as client:
        task = bar.add_task("posting feedback", total=n)
        for i in range(0, n, 10):
            chunk = evs[i : i + 10]
            if i % 30 == 0:  # a batch of ten
                r = client.post(
                    "/",
                    headers={"content-type": ev.BATCH},
                    content=json.dumps([ev.to_structured(e) for e in chunk]),
                )
                accepted += sum(1 for x in r.json()["results"] if x["status"] == 202)
            else:
                for j, e in enumerate(chunk):
                    if j % 2:
                        r = client.post(
                            "/",
                            headers={"content-type": ev.STRUCTURED},
                            content=json.dumps(ev.to_structured(e)),
                        )
                    else:
                        headers, body = ev.to_http_binary(e)
                        r = client.post("/", headers=headers, content=body)
                    accepted += r.status_code == 202
            bar.advance(task, len(chunk))
    in_kafka = count_topic(
        ctx.kafka_settings,
        topics.FEEDBACK,
        lambda r: dict(r.headers).get("ce_source") == source.encode(),
    )
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
    ctx.summary["feedback"] = {
        "posted": n,
        "accepted": accepted,
        "kafka": in_kafka,
        "archived": archived,
    }
