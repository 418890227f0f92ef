"""The local dispatcher sizes each route's consumers from the same autoscaling annotations the
cluster's eventing-kafka-broker autoscaler reads: lag threshold and max scale."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from driftloop import bus, events
from driftloop.local.eventing.dispatcher import Dispatcher
from driftloop.local.eventing.manifests import load_eventing
from driftloop.local.scaling import (
    CLASS,
    COOLDOWN_PERIOD,
    KEDA_CLASS,
    LAG_THRESHOLD,
    MAX_SCALE,
    MIN_SCALE,
    POLLING_INTERVAL,
)
from driftloop.settings import Settings
from tests.fixtures.packaging import kafka_source, unique, write_eventing

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(kafka: Any, tmp_path: Path) -> Settings:
    return Settings(
        kafka_bootstrap=kafka.bootstrap, state_dir=tmp_path / "state", dispatcher_poll_ms=100
    )


@pytest.fixture
def producer(settings: Settings) -> Iterator[Any]:
    p = bus.make_producer(settings)
    yield p
    p.close(timeout=5)


def _wait(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_lag_threshold_and_max_scale_decide_the_consumer_count(
    settings, producer, receiver, tmp_path
):
    scaled_topic, plain_topic = unique("test.scale"), unique("test.plain")
    bus.ensure_topics(settings, [scaled_topic, plain_topic], partitions=6)
    scaled = kafka_source("scaled", [scaled_topic], unique("g"), "Service", "fn")
    scaled["metadata"]["annotations"] = {
        CLASS: KEDA_CLASS,
        MIN_SCALE: "0",
        MAX_SCALE: "3",
        LAG_THRESHOLD: "10",
        POLLING_INTERVAL: "1",
        COOLDOWN_PERIOD: "0",
    }
    plain = kafka_source("plain", [plain_topic], unique("g"), "Service", "fn")
    ev_dir = write_eventing(tmp_path / "ev", [scaled, plain])
    receiver.control(delay_s=0.1)  # a slow function: the lag builds up
    evs = [events.new_event(events.FEEDBACK, "/test", {"n": i}, k=f"k{i}") for i in range(90)]
    others = [events.new_event(events.FEEDBACK, "/test", {"n": i}, k=f"k{i}") for i in range(40)]
    for e in evs:
        bus.send_event(producer, scaled_topic, e, key=e.extensions["k"])
    for e in others:
        bus.send_event(producer, plain_topic, e, key=e.extensions["k"])
    producer.flush(10)
    d = Dispatcher(load_eventing(ev_dir), {"fn": receiver.url}, settings)
    seen: set[int] = set()
    d.start()
    try:

        def scaled_up() -> bool:
            seen.add(d.consumers("scaled"))
            return d.consumers("scaled") == 3

        _wait(scaled_up, 60, "the lagging scaled route never reached max-scale consumers")
        assert d.consumers("plain") == 1  # no annotations: one consumer, however far behind
        ids = {e.id for e in [*evs, *others]}
        _wait(
            lambda: {x["headers"]["ce-id"] for x in receiver.ok()} >= ids,
            120,
            "not every record was delivered",
        )
        # caught up: back to one consumer (cooldown 0), never above max-scale meanwhile
        _wait(lambda: d.consumers("scaled") == 1, 60, "did not scale back down")
        assert max(seen) <= 3
        plan = {r["name"]: r for r in d.plan()["routes"]}
        assert plan["scaled"]["consumers"] == 1
        assert {s["name"]: s["consumers"] for s in d.states()} == {"scaled": 1, "plain": 1}
        assert not d.failed()
    finally:
        d.stop()
