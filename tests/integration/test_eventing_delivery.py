"""The local dispatcher against the real Kafka broker and a real HTTP receiver.

Each test writes its own eventing manifests (unique topics and consumer groups) in the
same shape as eventing/, so they share the session broker without interfering.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from driftloop import bus, events
from driftloop import topics as topic_names
from driftloop.local.components.dispatcher import components
from driftloop.local.eventing.dispatcher import Dispatcher
from driftloop.local.eventing.manifests import load_eventing
from driftloop.local.process import free_port
from driftloop.settings import Settings
from tests.fixtures.packaging import kafka_source, unique, write_eventing

pytestmark = pytest.mark.integration

SHORT_KAFKA_TIMEOUT_S = 3.0
"""``dispatcher_kafka_timeout_s`` of the routes whose dead-letter topic is missing: a try
fails (and the route says so) after this, not after the default 30 s."""


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


def _topic(settings: Settings, partitions: int = 3) -> str:
    name = unique("test.dispatch")
    bus.ensure_topics(settings, [name], partitions=partitions)
    return name


def _send(producer: Any, topic: str, evs: list[events.Event], key: str | None = None) -> None:
    for e in evs:
        bus.send_event(producer, topic, e, key=key or e.extensions.get("k"))
    producer.flush(10)


def _dispatch(settings: Settings, eventing: Path, endpoints: dict[str, str]) -> Dispatcher:
    d = Dispatcher(load_eventing(eventing), endpoints, settings)
    d.start()
    return d


def _dead_letters(settings: Settings, ids: set[str], timeout_s: float = 30) -> dict[str, dict]:
    """Dead-letter records whose ce_id is in ``ids``, with their headers."""
    consumer = bus.make_consumer(settings, [topic_names.DEADLETTER], unique("dl-reader"))
    found: dict[str, dict] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while set(found) != ids and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=300).values():
                for r in recs:
                    h = {k: (v or b"").decode() for k, v in r.headers}
                    if h.get("ce_id") in ids:
                        found[h["ce_id"]] = {"headers": h, "value": r.value}
    finally:
        consumer.close()
    return found


def test_order_per_partition_and_every_event_once(settings, producer, receiver, tmp_path):
    topic = _topic(settings)
    ev_dir = write_eventing(
        tmp_path / "ev", [kafka_source("src", [topic], unique("g"), "Service", "fn")]
    )
    evs = [
        events.new_event(
            events.FEEDBACK, "/test", {"key": f"m{i % 4}", "seq": i // 4}, k=f"m{i % 4}"
        )
        for i in range(200)
    ]
    _send(producer, topic, evs)
    d = _dispatch(settings, ev_dir, {"fn": receiver.url})
    try:
        got = receiver.wait_for(lambda ds: len(ds) >= 200, timeout_s=60)
    finally:
        d.stop()
    assert sorted(x["headers"]["ce-id"] for x in got) == sorted(e.id for e in evs)
    seqs: dict[str, list[int]] = defaultdict(list)
    for x in got:
        assert x["headers"]["ce-type"] == events.FEEDBACK  # binary mode: attributes as headers
        assert x["headers"]["content-type"] == "application/json"
        body = json.loads(x["body"])
        seqs[body["key"]].append(body["seq"])
    assert all(s == sorted(s) for s in seqs.values()), "per-key (per-partition) order broken"


def test_retry_with_exponential_backoff_then_success_keeps_order(
    settings, producer, receiver, tmp_path
):
    topic = _topic(settings, partitions=1)
    ev_dir = write_eventing(
        tmp_path / "ev",
        [kafka_source("src", [topic], unique("g"), "Service", "fn", retry=3, backoff="PT0.2S")],
    )
    evs = [events.new_event(events.FEEDBACK, "/test", {"n": i}) for i in range(3)]
    receiver.control(fail={evs[0].id: [503, 500]})
    _send(producer, topic, evs, key="m")
    d = _dispatch(settings, ev_dir, {"fn": receiver.url})
    try:
        got = receiver.wait_for(lambda ds: len([x for x in ds if x["status"] == 200]) >= 3)
    finally:
        d.stop()
    first = [x for x in got if x["headers"]["ce-id"] == evs[0].id]
    assert [x["status"] for x in first] == [503, 500, 200]
    gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(first)]
    assert gaps[0] >= 0.18 and gaps[1] >= 0.38, gaps  # 0.2 s, then 0.4 s
    ok_ids = [x["headers"]["ce-id"] for x in got if x["status"] == 200]
    assert ok_ids == [e.id for e in evs]


def test_dead_letter_after_retries_with_reason(settings, producer, receiver, tmp_path):
    topic = _topic(settings, partitions=1)
    ev_dir = write_eventing(
        tmp_path / "ev",
        [kafka_source("src", [topic], unique("g"), "Service", "fn", retry=2, backoff="PT0.05S")],
    )
    poison = events.new_event(events.FEEDBACK, "/test", {"n": 0}, id=unique("poison"))
    bad_request = events.new_event(events.FEEDBACK, "/test", {"n": 1}, id=unique("bad"))
    fine = events.new_event(events.FEEDBACK, "/test", {"n": 2})
    receiver.control(fail_prefix={poison.id: 503, bad_request.id: 400})
    _send(producer, topic, [poison, bad_request, fine], key="m")
    producer.send(topic, key=b"m", value=b"not a cloudevent", headers=[("ce_id", b"no-spec")]).get(
        10
    )
    d = _dispatch(settings, ev_dir, {"fn": receiver.url})
    try:
        got = receiver.wait_for(lambda ds: any(x["headers"]["ce-id"] == fine.id for x in ds))
        dl = _dead_letters(settings, {poison.id, bad_request.id, "no-spec"})
    finally:
        d.stop()
    attempts = [x["headers"]["ce-id"] for x in got]
    assert attempts.count(poison.id) == 3  # first try + 2 retries
    assert attempts.count(bad_request.id) == 1  # 400 is not retried
    assert set(dl) == {poison.id, bad_request.id, "no-spec"}
    assert "after 3 attempt(s): HTTP 503" in dl[poison.id]["headers"]["dl_reason"]
    assert "HTTP 400" in dl[bad_request.id]["headers"]["dl_reason"]
    assert "not a CloudEvent" in dl["no-spec"]["headers"]["dl_reason"]
    assert dl[poison.id]["headers"]["dl_source_topic"] == topic
    assert dl[poison.id]["headers"]["ce_type"] == events.FEEDBACK  # original event kept
    assert dl[poison.id]["headers"]["ce_knativeerrorcode"] == "503"  # as Knative marks it
    assert dl[poison.id]["headers"]["ce_knativeerrordest"] == receiver.url


def test_triggers_filter_control_plane_types(settings, producer, receiver, tmp_path):
    topic = _topic(settings)
    broker = {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Broker",
        "metadata": {"name": "b"},
        "spec": {"delivery": {"retry": 1}},
    }

    def trigger(name: str, type_: str, sub: str) -> dict:
        return {
            "apiVersion": "eventing.knative.dev/v1",
            "kind": "Trigger",
            "metadata": {"name": name},
            "spec": {
                "broker": "b",
                "filter": {"attributes": {"type": type_}},
                "subscriber": {
                    "ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": sub}
                },
            },
        }

    ev_dir = write_eventing(
        tmp_path / "ev",
        [
            broker,
            kafka_source("bridge", [topic], unique("g"), "Broker", "b"),
            trigger("t1", events.DRIFT_DETECTED, "retrain-trigger"),
            trigger("t2", events.MODEL_TRAINED, "promote"),
        ],
    )
    evs = [
        events.new_event(t, "/test", {"model": "m"})
        for t in (
            events.DRIFT_DETECTED,
            events.MODEL_TRAINED,
            events.MODEL_PROMOTED,
            events.DRIFT_DETECTED,
        )
    ]
    _send(producer, topic, evs, key="m")
    d = _dispatch(
        settings,
        ev_dir,
        {"retrain-trigger": f"{receiver.url}/retrain", "promote": f"{receiver.url}/promote"},
    )
    try:
        receiver.wait_for(lambda ds: len(ds) >= 3)
        time.sleep(1.0)  # nothing else may arrive
        got = receiver.deliveries()
    finally:
        d.stop()
    by_path = defaultdict(list)
    for x in got:
        by_path[x["path"]].append(x["headers"]["ce-id"])
    assert by_path["/retrain"] == [evs[0].id, evs[3].id]
    assert by_path["/promote"] == [evs[1].id]
    assert len(got) == 3  # model.promoted matched no trigger


def test_trigger_reply_goes_back_into_the_broker(settings, producer, receiver, tmp_path):
    """A subscriber's reply event re-enters the broker, where another trigger routes it."""
    topic = _topic(settings)
    broker = {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Broker",
        "metadata": {"name": "b"},
        "spec": {},
    }
    trig = [
        {
            "apiVersion": "eventing.knative.dev/v1",
            "kind": "Trigger",
            "metadata": {"name": n},
            "spec": {
                "broker": "b",
                "filter": {"attributes": {"type": t}},
                "subscriber": {
                    "ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": s}
                },
            },
        }
        for n, t, s in [
            ("drift", events.DRIFT_DETECTED, "retrain-trigger"),
            ("retrain", events.RETRAIN_REQUESTED, "trainer"),
        ]
    ]
    ev_dir = write_eventing(
        tmp_path / "ev",
        [broker, kafka_source("bridge", [topic], unique("g"), "Broker", "b"), *trig],
    )
    receiver.control(reply={events.DRIFT_DETECTED: events.RETRAIN_REQUESTED})
    drift = events.new_event(events.DRIFT_DETECTED, "/test", {"model": "m"})
    _send(producer, topic, [drift], key="m")
    d = _dispatch(
        settings,
        ev_dir,
        {
            "retrain-trigger": f"{receiver.url}/retrain-trigger",
            "trainer": f"{receiver.url}/trainer",
        },
    )
    try:
        got = receiver.wait_for(lambda ds: any(x["path"] == "/trainer" for x in ds))
    finally:
        d.stop()
    (reply,) = [x for x in got if x["path"] == "/trainer"]
    assert reply["headers"]["ce-type"] == events.RETRAIN_REQUESTED
    assert reply["headers"]["ce-id"] == f"reply-{drift.id}"


def test_ping_source_fires_on_schedule(settings, receiver, tmp_path):
    ping = {
        "apiVersion": "sources.knative.dev/v1",
        "kind": "PingSource",
        "metadata": {"name": "tick"},
        "spec": {
            "schedule": "@every 1s",
            "contentType": "application/json",
            "data": '{"reason": "schedule"}',
            "sink": {
                "ref": {
                    "apiVersion": "serving.knative.dev/v1",
                    "kind": "Service",
                    "name": "drift-check",
                }
            },
        },
    }
    ev_dir = write_eventing(tmp_path / "ev", [ping])
    d = _dispatch(settings, ev_dir, {"drift-check": receiver.url})
    try:
        got = receiver.wait_for(lambda ds: len(ds) >= 3, timeout_s=10)
    finally:
        d.stop()
    assert all(x["headers"]["ce-type"] == events.PING for x in got)
    assert got[0]["headers"]["ce-source"] == "/apis/v1/namespaces/driftloop/pingsources/tick"
    assert got[0]["body"] == '{"reason": "schedule"}'
    gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(got)]
    assert all(0.7 < g < 1.5 for g in gaps), gaps
    assert len({x["headers"]["ce-id"] for x in got}) == len(got)


def test_killed_dispatcher_restarts_without_loss(
    settings, producer, receiver, dispatcher_process, tmp_path
):
    topic = _topic(settings)
    ev_dir = write_eventing(
        tmp_path / "ev", [kafka_source("src", [topic], unique("g"), "Service", "fn")]
    )
    evs = [events.new_event(events.FEEDBACK, "/test", {"n": i}, k=f"m{i % 3}") for i in range(300)]
    receiver.control(delay_s=0.005)
    _send(producer, topic, evs)
    proc = dispatcher_process(ev_dir, settings.kafka_bootstrap, {"fn": receiver.url})
    proc.start()
    receiver.wait_for(lambda ds: len(ds) >= 60, timeout_s=60)
    proc.kill()  # SIGKILL mid-stream
    before = len(receiver.ok())
    assert before < 300
    proc.start()
    want = {e.id for e in evs}
    got = receiver.wait_for(lambda ds: want <= {x["headers"]["ce-id"] for x in ds}, timeout_s=90)
    proc.stop()
    ids = [x["headers"]["ce-id"] for x in got]
    assert set(ids) == want  # at least once: nothing lost
    assert len(ids) - len(want) <= 100  # redelivered at most the uncommitted tail


def test_a_latest_route_that_restarts_skips_nothing_on_a_partition_it_never_read(
    settings, producer, receiver, tmp_path
):
    """``initialOffset: latest`` means after the route first started: a record that reaches a
    partition while the route is down is delivered when it comes back, even on a partition
    the route had read nothing from (no offset of its own to resume from)."""
    topic, group = _topic(settings, partitions=2), unique("g")
    ev_dir = write_eventing(
        tmp_path / "ev",
        [kafka_source("src", [topic], group, "Service", "fn", initial_offset="latest")],
    )
    before = events.new_event(events.FEEDBACK, "/test", {"n": 0}, id=unique("before"))
    first = events.new_event(events.FEEDBACK, "/test", {"n": 1}, id=unique("first"))
    down = events.new_event(events.FEEDBACK, "/test", {"n": 2}, id=unique("down"))

    def send(e: events.Event, partition: int) -> None:
        record = events.to_kafka(e)
        producer.send(
            topic, key=record.key, value=record.value, headers=record.headers, partition=partition
        ).get(10)

    send(before, 0)  # before the route exists: latest skips it
    d = _dispatch(settings, ev_dir, {"fn": receiver.url})
    try:
        deadline = time.monotonic() + 30
        while _committed(settings, group, topic) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        send(first, 0)
        receiver.wait_for(lambda ds: any(x["headers"]["ce-id"] == first.id for x in ds))
    finally:
        d.stop()
    send(down, 1)  # partition 1: never read by this group
    d = _dispatch(settings, ev_dir, {"fn": receiver.url})
    try:
        receiver.wait_for(lambda ds: any(x["headers"]["ce-id"] == down.id for x in ds), 30)
    finally:
        d.stop()
    ids = [x["headers"]["ce-id"] for x in receiver.ok()]
    assert before.id not in ids
    assert ids.count(first.id) == 1 and ids.count(down.id) == 1


def test_stack_component_starts_on_repo_manifests_and_reports_health(kafka, receiver, tmp_path):
    """What `driftloop up` runs: the real eventing/ files, endpoints from stack.json."""
    port = int(kafka.bootstrap.rsplit(":", 1)[1])
    settings = Settings(
        state_dir=tmp_path / "state", kafka_port=port, dispatcher_metrics_port=free_port()
    )
    settings.state_dir.mkdir(parents=True)
    (settings.state_dir / "stack.json").write_text(
        json.dumps(
            {
                "components": [
                    {"name": "drift-check", "pid": 1, "endpoint": receiver.url, "healthy": True}
                ]
            }
        )
    )
    (spec,) = components(settings)
    spec.prepare()
    proc = subprocess.Popen(
        list(spec.argv),
        env={**os.environ, **spec.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not spec.health():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        beat = json.loads((settings.state_dir / "dispatcher.json").read_text())
        routed = {r["name"]: r["url"] for r in beat["routes"]}
        assert routed["drift-check"] == receiver.url
        assert "promote-on-trained" in "".join(beat["skipped"])  # no local promote yet
        running = {name for name, url in routed.items() if url}
        assert beat["failed"] == [] and {r["name"] for r in beat["route_states"]} == running
        metrics = httpx.get(f"http://127.0.0.1:{settings.dispatcher_metrics_port}/metrics")
        assert 'driftloop_dispatcher_route_up{route="drift-check"} 1.0' in metrics.text
    finally:
        proc.terminate()
        proc.wait(20)


def _dead_letter_records(settings: Settings, ce_id: str) -> list[Any]:
    """Every dead letter with ``ce_id`` now on the dead-letter topic (callers wait until the
    route is past the record: a route writes its dead letter before its next delivery)."""
    return [
        r
        for r in _records(settings, topic_names.DEADLETTER)
        if dict(r.headers).get("ce_id") == ce_id.encode()
    ]


def test_record_too_large_to_dead_letter_is_cut_and_the_route_goes_on(settings, receiver, tmp_path):
    """A 1.2 MB record (the broker takes 16 MiB) refused by its subscriber: the dead letter
    carries the value's head, its size and sha256 and the record's place; the route
    delivers the next record and reports no failure."""
    import hashlib

    topic = _topic(settings, partitions=1)
    ev_dir = write_eventing(
        tmp_path / "ev",
        [kafka_source("src", [topic], unique("g"), "Service", "fn", retry=0)],
    )
    big = events.new_event(
        events.FEEDBACK, "/test", {"model": "m", "truth": "x" * 1_200_000}, id=unique("big")
    )
    after = events.new_event(events.FEEDBACK, "/test", {"model": "m"}, id=unique("after"))
    receiver.control(fail_prefix={big.id: 400})
    large = bus.make_producer(settings, max_request_size=4 * 1024 * 1024)
    try:
        _send(large, topic, [big, after], key="m")
    finally:
        large.close(timeout=5)
    (value,) = [r for r in _records(settings, topic) if dict(r.headers)["ce_id"] == big.id.encode()]
    assert len(value.value) > 1_200_000
    d = _dispatch(settings, ev_dir, {"fn": receiver.url})
    try:
        receiver.wait_for(lambda ds: any(x["headers"]["ce-id"] == after.id for x in ds))
        (dl,) = _dead_letter_records(settings, big.id)
        assert d.failed() == []
        (state,) = d.states()
    finally:
        d.stop()
    h = {k: v.decode() for k, v in dl.headers}
    assert len(dl.value) == settings.dead_letter_max_value_bytes
    assert dl.value == value.value[: settings.dead_letter_max_value_bytes]
    assert h[bus.DL_VALUE_BYTES] == str(len(value.value))
    assert h[bus.DL_VALUE_SHA256] == hashlib.sha256(value.value).hexdigest()
    assert h["dl_source_topic"] == topic and h["dl_source_offset"] == str(value.offset)
    assert "HTTP 400" in h["dl_reason"]
    assert h["dl_sink"] == "fn"  # the dispatcher's header survives bus.dead_letter
    assert h["ce_type"] == events.FEEDBACK
    assert state["dead_letters_truncated"] == 1 and state["delivered"] == 1
    truncated = d.metrics.registry.get_sample_value(
        "driftloop_dispatcher_dead_letters_truncated_total", {"route": "src"}
    )
    assert truncated == 1


def _records(settings: Settings, topic: str) -> list[Any]:
    from tests.fixtures.kafka import read_topic

    return read_topic(settings.kafka_bootstrap, topic)


def test_a_route_that_cannot_dead_letter_stays_up_reports_it_and_recovers(
    settings, producer, receiver, tmp_path
):
    """The dead-letter topic is missing (no auto-creation): the route keeps the record,
    says it fails (heartbeat list, metric) and dead-letters it once the topic exists."""
    topic = _topic(settings, partitions=1)
    lost = unique("test.lost-dl")
    source = kafka_source("src", [topic], unique("g"), "Service", "fn", retry=0)
    source["spec"]["delivery"]["deadLetterSink"]["ref"]["name"] = "lost"
    sink = {
        "apiVersion": "eventing.knative.dev/v1alpha1",
        "kind": "KafkaSink",
        "metadata": {"name": "lost"},
        "spec": {"topic": lost, "bootstrapServers": ["x:9092"]},
    }
    ev_dir = write_eventing(tmp_path / "ev", [sink, source])
    poison = events.new_event(events.FEEDBACK, "/test", {"n": 0}, id=unique("poison"))
    after = events.new_event(events.FEEDBACK, "/test", {"n": 1}, id=unique("after"))
    receiver.control(fail_prefix={poison.id: 400})
    _send(producer, topic, [poison, after], key="m")
    # Each dead-letter try gives up after a few seconds: the failing route is reported
    # within them, not after the default 30 s.
    short = settings.model_copy(update={"dispatcher_kafka_timeout_s": SHORT_KAFKA_TIMEOUT_S})
    d = _dispatch(short, ev_dir, {"fn": receiver.url})
    try:
        deadline = time.monotonic() + 60
        while not d.failed():
            assert time.monotonic() < deadline, "the failing route was never reported"
            time.sleep(0.2)
        assert "src" in d.failed()[0]
        route_up = d.metrics.registry.get_sample_value(
            "driftloop_dispatcher_route_up", {"route": "src"}
        )
        assert route_up == 0
        assert (
            d.metrics.registry.get_sample_value(
                "driftloop_dispatcher_errors_total", {"route": "src"}
            )
            >= 1
        )
        assert all(w.is_alive() for w in d.routes)  # the route waits, it does not die
        assert not any(x["headers"]["ce-id"] == after.id for x in receiver.deliveries())
        bus.ensure_topics(settings, [lost], partitions=1)
        receiver.wait_for(lambda ds: any(x["headers"]["ce-id"] == after.id for x in ds), 90)
        assert d.failed() == []
        assert (
            d.metrics.registry.get_sample_value("driftloop_dispatcher_route_up", {"route": "src"})
            == 1
        )
    finally:
        d.stop()
    parked = [r for r in _records(settings, lost) if dict(r.headers)["ce_id"] == poison.id.encode()]
    assert len(parked) == 1
    assert b"HTTP 400" in dict(parked[0].headers)["dl_reason"]


def test_a_non_cloudevent_on_a_broker_topic_is_dead_lettered_once(
    settings, producer, receiver, tmp_path
):
    """Every Trigger of a broker reads its topic; only one dead-letters a record that is
    not a CloudEvent (on a cluster the broker's ingress refuses it once)."""
    topic = _topic(settings, partitions=1)
    broker = {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Broker",
        "metadata": {"name": "b"},
        "spec": {
            "delivery": {
                "retry": 0,
                "deadLetterSink": {"ref": {"kind": "KafkaSink", "name": "deadletter"}},
            }
        },
    }

    def trigger(name: str, type_: str, sub: str) -> dict:
        return {
            "apiVersion": "eventing.knative.dev/v1",
            "kind": "Trigger",
            "metadata": {"name": name},
            "spec": {
                "broker": "b",
                "filter": {"attributes": {"type": type_}},
                "subscriber": {"ref": {"kind": "Service", "name": sub}},
            },
        }

    ev_dir = write_eventing(
        tmp_path / "ev",
        [
            broker,
            kafka_source("bridge", [topic], unique("g"), "Broker", "b"),
            trigger("t1", events.DRIFT_DETECTED, "retrain-trigger"),
            trigger("t2", events.MODEL_TRAINED, "promote"),
            trigger("t3", events.MODEL_PROMOTED, "drift-check"),
        ],
    )
    bad_id = unique("not-a-ce")
    producer.send(topic, key=b"m", value=b"{}", headers=[("ce_id", bad_id.encode())]).get(10)
    evs = [
        events.new_event(t, "/test", {"model": "m"})
        for t in (events.DRIFT_DETECTED, events.MODEL_TRAINED, events.MODEL_PROMOTED)
    ]
    _send(producer, topic, evs, key="m")
    d = _dispatch(
        settings,
        ev_dir,
        {s: f"{receiver.url}/{s}" for s in ("retrain-trigger", "promote", "drift-check")},
    )
    try:
        receiver.wait_for(lambda ds: len(ds) >= 3)  # every route is past the bad record
        parked = _dead_letter_records(settings, bad_id)
    finally:
        d.stop()
    assert len(parked) == 1
    assert b"not a CloudEvent" in dict(parked[0].headers)["dl_reason"]


def test_a_record_http_cannot_carry_is_dead_lettered_and_the_route_goes_on(
    settings, producer, receiver, tmp_path
):
    """A CloudEvent whose extension holds non-ASCII text (fine in Kafka, not in an HTTP
    header) costs one dead letter; the records behind it are delivered."""
    topic = _topic(settings, partitions=1)
    ev_dir = write_eventing(
        tmp_path / "ev", [kafka_source("src", [topic], unique("g"), "Service", "fn", retry=0)]
    )
    odd = events.new_event(events.FEEDBACK, "/test", {"n": 0}, id=unique("odd"))
    after = events.new_event(events.FEEDBACK, "/test", {"n": 1}, id=unique("after"))
    rec = events.to_kafka(odd, "m")
    producer.send(
        topic, key=rec.key, value=rec.value, headers=[*rec.headers, ("ce_note", "é€".encode())]
    ).get(10)
    _send(producer, topic, [after], key="m")
    d = _dispatch(settings, ev_dir, {"fn": receiver.url})
    try:
        receiver.wait_for(lambda ds: any(x["headers"]["ce-id"] == after.id for x in ds))
        (parked,) = _dead_letter_records(settings, odd.id)
        assert d.failed() == []
    finally:
        d.stop()
    assert b"UnicodeEncodeError" in dict(parked.headers)["dl_reason"]
    assert dict(parked.headers)["ce_note"] == "é€".encode()


def test_the_dispatcher_process_stays_up_and_reports_a_failing_route(
    settings, producer, receiver, dispatcher_process, tmp_path
):
    """What `driftloop status` reads: the process does not exit on a route that cannot
    dead-letter; its heartbeat makes the component unhealthy and its /metrics say which
    route, until the route recovers."""
    from driftloop.local.components.dispatcher import _healthy

    topic = _topic(settings, partitions=1)
    lost = unique("test.lost-dl")
    source = kafka_source("src", [topic], unique("g"), "Service", "fn", retry=0)
    source["spec"]["delivery"]["deadLetterSink"]["ref"]["name"] = "lost"
    sink = {
        "apiVersion": "eventing.knative.dev/v1alpha1",
        "kind": "KafkaSink",
        "metadata": {"name": "lost"},
        "spec": {"topic": lost, "bootstrapServers": ["x:9092"]},
    }
    ev_dir = write_eventing(tmp_path / "ev", [sink, source])
    poison = events.new_event(events.FEEDBACK, "/test", {"n": 0}, id=unique("poison"))
    receiver.control(fail_prefix={poison.id: 400})
    _send(producer, topic, [poison], key="m")
    proc = dispatcher_process(ev_dir, settings.kafka_bootstrap, {"fn": receiver.url})
    proc.env["DRIFTLOOP_DISPATCHER_KAFKA_TIMEOUT_S"] = str(SHORT_KAFKA_TIMEOUT_S)
    proc.start()
    state = Settings(state_dir=tmp_path / "state")
    metrics_url = f"http://127.0.0.1:{proc.env['DRIFTLOOP_DISPATCHER_METRICS_PORT']}/metrics"

    def wait(what: str, cond: Any, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while not cond():
            assert proc.proc is not None and proc.proc.poll() is None, "dispatcher exited"
            assert time.monotonic() < deadline, what
            time.sleep(0.5)

    def beat() -> dict:
        try:
            return json.loads((state.state_dir / "dispatcher.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    wait("the failing route in the heartbeat", lambda: bool(beat().get("failed")))
    assert _healthy(state) is False
    assert "src" in beat()["failed"][0]
    text = httpx.get(metrics_url, timeout=5).text
    assert 'driftloop_dispatcher_route_up{route="src"} 0.0' in text
    bus.ensure_topics(settings, [lost], partitions=1)
    wait("recovery", lambda: _healthy(state))
    assert proc.proc is not None and proc.proc.poll() is None
    text = httpx.get(metrics_url, timeout=5).text
    assert 'driftloop_dispatcher_route_up{route="src"} 1.0' in text
    assert 'driftloop_dispatcher_dead_lettered_total{route="src"} 1.0' in text
    proc.stop()


def test_partitions_are_delivered_concurrently_each_in_order(
    settings, producer, receiver, tmp_path
):
    """Each partition has its own lane: a record goes out only once the one before it in
    its partition was answered, while other partitions' records are in flight."""
    topic = _topic(settings, partitions=6)
    ev_dir = write_eventing(
        tmp_path / "ev", [kafka_source("src", [topic], unique("g"), "Service", "fn")]
    )
    evs = [
        events.new_event(
            events.FEEDBACK, "/test", {"key": f"k{i % 12}", "seq": i // 12}, k=f"k{i % 12}"
        )
        for i in range(240)
    ]
    receiver.control(delay_s=0.01)
    _send(producer, topic, evs)
    d = _dispatch(settings, ev_dir, {"fn": receiver.url})
    try:
        got = receiver.wait_for(
            lambda ds: len(ds) >= 240 and all("t_end" in x for x in ds), timeout_s=90
        )
    finally:
        d.stop()
    assert sorted(x["headers"]["ce-id"] for x in got) == sorted(e.id for e in evs)
    by_key: dict[str, list[dict]] = defaultdict(list)
    for x in got:
        by_key[json.loads(x["body"])["key"]].append(x)
    for key, xs in by_key.items():
        assert [json.loads(x["body"])["seq"] for x in xs] == list(range(20)), key
        for before, after in itertools.pairwise(xs):
            assert after["t"] >= before["t_end"], f"{key}: sent before the previous was answered"
    spans = sorted((x["t"], x["t_end"]) for x in got)
    assert any(b[0] < a[1] for a, b in itertools.pairwise(spans)), "no two deliveries overlapped"


def _committed(settings: Settings, group: str, topic: str) -> int | None:
    """The group's committed offset of partition 0, read without joining the group."""
    from kafka.structs import TopicPartition

    consumer = bus.make_consumer(settings, [], group)
    try:
        return consumer.committed(TopicPartition(topic, 0))
    finally:
        consumer.close(autocommit=False)


def test_offsets_are_committed_after_delivery_not_before(settings, producer, receiver, tmp_path):
    """While a record is retried, the committed offset stays on it (the records before it are
    committed); it moves past it only once it is dead-lettered."""
    topic, group = _topic(settings, partitions=1), unique("g")
    ev_dir = write_eventing(
        tmp_path / "ev",
        [kafka_source("src", [topic], group, "Service", "fn", retry=3, backoff="PT1S")],
    )
    evs = [
        events.new_event(events.FEEDBACK, "/test", {"n": i}, id=unique(f"e{i}")) for i in range(10)
    ]
    stuck = evs[5]
    receiver.control(fail_prefix={stuck.id: 503})
    _send(producer, topic, evs, key="m")
    d = _dispatch(settings, ev_dir, {"fn": receiver.url})
    try:
        receiver.wait_for(
            lambda ds: [x["headers"]["ce-id"] for x in ds].count(stuck.id) >= 2, timeout_s=30
        )
        during = _committed(settings, group, topic)  # the record is waiting for its 3rd try
        assert [x["headers"]["ce-id"] for x in receiver.deliveries()].count(stuck.id) < 4
        receiver.wait_for(lambda ds: any(x["headers"]["ce-id"] == evs[-1].id for x in ds))
        deadline = time.monotonic() + 10
        while _committed(settings, group, topic) != 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        after = _committed(settings, group, topic)
    finally:
        d.stop()
    assert during == 5, during
    assert after == 10
    assert len(_dead_letter_records(settings, stuck.id)) == 1


def test_a_kept_alive_connection_the_sink_closed_costs_no_attempt():
    """Servers close idle keep-alive connections (gunicorn after 2 s): the next delivery
    goes out on a new connection, without spending a retry."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from driftloop.local.eventing.delivery import Deliverer
    from driftloop.local.eventing.manifests import Delivery

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 0.2  # closes a connection idle for 0.2 s

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    deliverer = Deliverer(threading.Event(), 5.0)
    url = f"http://127.0.0.1:{server.server_port}/"
    try:
        headers, body = events.to_http_binary(events.new_event(events.FEEDBACK, "/t", {"n": 1}))
        first = deliverer.deliver(url, headers, body, Delivery(retry=0))
        time.sleep(0.6)
        second = deliverer.deliver(url, headers, body, Delivery(retry=0))
    finally:
        deliverer.close()
        server.shutdown()
    assert first.delivered and second.delivered, second.reason
    assert second.attempts == 1
