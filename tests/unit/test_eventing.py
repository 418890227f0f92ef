"""Pure parts of the local dispatcher: manifests → routes, backoff, filters, cron."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from driftloop import events
from driftloop import topics as topic_names
from driftloop.local.eventing.delivery import (
    matches,
    record_to_http,
    reply_to_kafka,
    retryable,
)
from driftloop.local.eventing.endpoints import endpoints_from_stack
from driftloop.local.eventing.manifests import (
    Delivery,
    EventingError,
    build_eventing,
    invalid_record_owners,
    load_eventing,
    parse_delivery,
    parse_iso_duration,
)
from driftloop.local.eventing.schedule import ScheduleError, next_fire, ping_event
from driftloop.settings import Settings

EVENTING = Path(__file__).resolve().parents[2] / "eventing"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("PT0.5S", 0.5), ("PT2S", 2), ("PT1M30S", 90), ("PT1H", 3600), ("P1DT1S", 86401)],
)
def test_iso_durations(text, seconds):
    assert parse_iso_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "P", "PT", "5s", "PTXS"])
def test_bad_durations_are_refused(bad):
    with pytest.raises(EventingError):
        parse_iso_duration(bad)


def test_backoff_exponential_and_linear():
    assert Delivery(retry=4, backoff_delay_s=0.5).delays() == [0.5, 1.0, 2.0, 4.0]
    assert Delivery(retry=3, backoff_policy="linear", backoff_delay_s=0.5).delays() == [
        0.5,
        1.0,
        1.5,
    ]
    assert Delivery().delays() == []


def test_delivery_spec_parsed_and_broker_default_used():
    spec = {
        "retry": 5,
        "backoffPolicy": "exponential",
        "backoffDelay": "PT0.5S",
        "timeout": "PT30S",
        "deadLetterSink": {"ref": {"kind": "KafkaSink", "name": "deadletter"}},
    }
    d = parse_delivery(spec)
    assert (d.retry, d.backoff_delay_s, d.timeout_s, d.dead_letter) == (5, 0.5, 30, "deadletter")
    fallback = Delivery(retry=2)
    assert parse_delivery(None, fallback) is fallback
    with pytest.raises(EventingError, match="backoffPolicy"):
        parse_delivery({"backoffPolicy": "random"})


def test_repo_eventing_manifests_become_routes_and_pings():
    ev = load_eventing(EVENTING)
    by_sink = {}
    for r in ev.routes:
        by_sink.setdefault(r.sink, []).append(r)
    # Kafka sources straight to functions
    (dc,) = [r for r in by_sink["drift-check"] if r.broker is None]
    assert set(dc.topics) == {topic_names.LABELED, topic_names.PREDICTIONS}
    assert dc.delivery.retry == 5 and dc.delivery.dead_letter == "deadletter"
    (rt,) = [r for r in by_sink["retrain-trigger"] if r.broker is None]
    assert rt.topics == (topic_names.LABELED,)  # labeled records feed the volume trigger
    # control plane through the broker's triggers, each its own group, filtered by type
    via_broker = {r.sink: r for r in ev.routes if r.broker == "driftloop"}
    assert via_broker["retrain-trigger"].filter == {"type": events.DRIFT_DETECTED}
    assert via_broker["promote"].filter == {"type": events.MODEL_TRAINED}
    assert via_broker["drift-check"].filter == {"type": events.MODEL_PROMOTED}
    assert all(r.topics == (topic_names.EVENTS,) for r in via_broker.values())
    assert len({r.group for r in ev.routes}) == len(ev.routes)
    assert ev.dead_letter_topics == {"deadletter": topic_names.DEADLETTER}
    assert {(p.name, p.sink) for p in ev.pings} == {
        ("drift-check-schedule", "drift-check"),
        ("retrain-schedule", "retrain-trigger"),
        ("inputs-retention", "retrain-trigger"),
    }


def test_undefined_dead_letter_sink_and_uri_sinks_are_errors():
    src = {
        "kind": "KafkaSource",
        "metadata": {"name": "s"},
        "spec": {
            "topics": ["t"],
            "delivery": {"deadLetterSink": {"ref": {"name": "nope"}}},
            "sink": {"ref": {"kind": "Service", "name": "fn"}},
        },
    }
    with pytest.raises(EventingError, match="nope"):
        build_eventing([(Path("x.yaml"), src)])
    src2 = {
        "kind": "KafkaSource",
        "metadata": {"name": "s"},
        "spec": {"topics": ["t"], "sink": {"uri": "http://x"}},
    }
    with pytest.raises(EventingError, match=r"x.yaml: KafkaSource/s: sink.ref.name"):
        build_eventing([(Path("x.yaml"), src2)])


def test_kafka_binary_record_to_http_binary():
    ev = events.new_event(events.FEEDBACK, "/app", {"model": "m"}, tenant="a")
    rec = events.to_kafka(ev, "m")
    headers, body, attrs = record_to_http(rec.value, rec.headers)
    assert headers["ce-id"] == ev.id and headers["ce-type"] == events.FEEDBACK
    assert headers["ce-tenant"] == "a" and headers["content-type"] == "application/json"
    assert json.loads(body) == {"model": "m"}
    assert attrs["type"] == events.FEEDBACK
    assert events.from_http(headers, body)[0].id == ev.id


def test_structured_record_forwarded_structured():
    obj = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "data": {"a": 1}}
    headers, body, attrs = record_to_http(
        json.dumps(obj).encode(), [("content-type", b"application/cloudevents+json")]
    )
    assert headers == {"content-type": "application/cloudevents+json"}
    sent = json.loads(body)
    sent.pop("time")  # the CloudEvents SDK stamps a structured event that has none
    assert attrs["type"] == "t" and sent == obj


@pytest.mark.parametrize(
    ("value", "headers", "why"),
    [
        (b"x", [], "not a CloudEvent"),
        (b"x", [("ce_specversion", b"1.0"), ("ce_id", b"1")], "ce_source.*ce_type"),
        (b"{", [("content-type", b"application/cloudevents+json")], "not valid JSON"),
    ],
)
def test_records_that_are_not_cloudevents(value, headers, why):
    with pytest.raises(EventingError, match=why):
        record_to_http(value, headers)


def test_trigger_filter_exact_attributes():
    assert matches({}, {"type": "x"})
    assert matches({"type": "a"}, {"type": "a", "source": "s"})
    assert not matches({"type": "a"}, {"type": "b"})
    assert not matches({"type": "a", "source": "s"}, {"type": "a"})
    assert matches({"source": ""}, {"type": "a"})


def test_retryable_statuses_follow_knative():
    assert all(retryable(s) for s in (None, 500, 503, 404, 408, 409, 429))
    assert not any(retryable(s) for s in (400, 401, 403, 413, 422))


def test_cron_next_fire_in_timezone_and_every():
    after = datetime(2026, 3, 1, 2, 59, 30, tzinfo=UTC)
    assert next_fire("*/15 * * * *", after) == datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
    assert next_fire("0 3 * * *", after, "Europe/Berlin") == datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    assert (next_fire("@every 1.5s", after) - after).total_seconds() == 1.5
    with pytest.raises(ScheduleError):
        next_fire("61 * * * *", after)
    with pytest.raises(ScheduleError):
        next_fire("* * * * *", after, "Mars/Olympus")


def test_ping_event_is_a_knative_ping():
    ev = load_eventing(EVENTING)
    ping = next(p for p in ev.pings if p.name == "drift-check-schedule")
    headers, body = ping_event(ping, datetime(2026, 1, 1, tzinfo=UTC))
    (parsed,) = events.from_http(headers, body)
    assert parsed.type == events.PING
    assert parsed.source == "/apis/v1/namespaces/driftloop/pingsources/drift-check-schedule"
    assert parsed.data == {"reason": "schedule", "task": "drift-check"}


def test_reply_event_to_kafka_only_when_it_is_a_cloudevent():
    assert reply_to_kafka({"content-type": "text/plain"}, b"ok") is None
    reply = reply_to_kafka(
        {
            "ce-id": "1",
            "ce-type": "t",
            "ce-source": "/s",
            "ce-specversion": "1.0",
            "content-type": "application/json",
        },
        b"{}",
    )
    assert reply is not None and events.from_kafka(reply.value, reply.headers).type == "t"


def test_endpoints_from_stack_json(tmp_path):
    (tmp_path / "stack.json").write_text(
        json.dumps(
            {
                "components": [
                    {"name": "kafka", "pid": 1, "endpoint": "127.0.0.1:9092", "healthy": True},
                    {"name": "feedback-intake", "pid": 2, "endpoint": "http://127.0.0.1:8080"},
                    {"name": "drift-check", "pid": 3, "endpoint": "127.0.0.1:8081"},
                ]
            }
        )
    )
    assert endpoints_from_stack(tmp_path) == {
        "feedback-intake": "http://127.0.0.1:8080",
        "drift-check": "http://127.0.0.1:8081",
    }
    assert endpoints_from_stack(tmp_path / "missing") == {}


def test_dispatcher_component_runs_after_the_functions(tmp_path):
    from driftloop.local.components.dispatcher import components

    (spec,) = components(Settings(state_dir=tmp_path))
    assert spec.name == "dispatcher" and spec.order == 60
    assert spec.health() is False  # no heartbeat yet
    assert any("driftloop.events" in r for r in spec.extra["routes"])
    assert components(Settings(state_dir=tmp_path, eventing_dir=tmp_path / "none")) == []


def test_initial_offset_defaults_to_latest_like_knative():
    def src(**extra):
        return {
            "kind": "KafkaSource",
            "metadata": {"name": "s"},
            "spec": {"topics": ["t"], "sink": {"ref": {"kind": "Service", "name": "fn"}}, **extra},
        }

    (r,) = build_eventing([(Path("x.yaml"), src())]).routes
    assert r.initial_offset == "latest"
    (r,) = build_eventing([(Path("x.yaml"), src(initialOffset="earliest"))]).routes
    assert r.initial_offset == "earliest"
    with pytest.raises(EventingError, match="initialOffset"):
        build_eventing([(Path("x.yaml"), src(initialOffset="middle"))])
    assert all(r.initial_offset == "earliest" for r in load_eventing(EVENTING).routes)


def test_one_trigger_per_broker_topic_dead_letters_records_that_are_not_cloudevents():
    ev = load_eventing(EVENTING)
    owners = invalid_record_owners(ev.routes)
    via_broker = [r for r in ev.routes if r.broker is not None]
    assert len(via_broker) >= 3
    assert len([r for r in via_broker if r.name in owners]) == 1
    assert all(r.name in owners for r in ev.routes if r.broker is None)
    # the owner is one that has a dead-letter sink
    (owner,) = [r for r in via_broker if r.name in owners]
    assert owner.delivery.dead_letter == "deadletter"
    # without the first trigger (no local endpoint), another takes over
    rest = [r for r in ev.routes if r.name != owner.name]
    again = invalid_record_owners(rest)
    assert len([r for r in rest if r.broker is not None and r.name in again]) == 1


class _Producer:
    """Captures what is sent (bus.dead_letter is pure apart from ``send``)."""

    def __init__(self) -> None:
        self.sent: list[dict] = []

    def send(self, topic, *, key=None, value=None, headers=None):
        self.sent.append({"topic": topic, "key": key, "value": value, "headers": headers})
        return None


def test_dead_letter_cuts_what_cannot_fit_and_keeps_foreign_headers():
    import hashlib

    from driftloop import bus

    p = _Producer()
    value = b"v" * 2_000_000
    bus.dead_letter(
        p,
        reason="r",
        source_topic="t",
        value=value,
        headers=[
            ("ce_id", b"1"),
            ("dl_sink", b"fn"),
            ("dl_reason", b"an older reason"),
            ("huge", b"h" * 100_000),
        ],
        partition=2,
        offset=7,
        max_value_bytes=4096,
    )
    (sent,) = p.sent
    h = dict(sent["headers"])
    assert sent["topic"] == topic_names.DEADLETTER
    assert sent["value"] == value[:4096]
    assert h["dl_value_bytes"] == b"2000000"
    assert h["dl_value_sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert h["dl_sink"] == b"fn" and h["ce_id"] == b"1"
    assert h["dl_reason"] == b"r" and [k for k, _ in sent["headers"]].count("dl_reason") == 1
    assert h["dl_source_partition"] == b"2" and h["dl_source_offset"] == b"7"
    assert len(h["huge"]) == bus.DEAD_LETTER_MAX_HEADER_BYTES
    assert h["dl_truncated_headers"] == b"huge"
    # a small value is kept whole, with no truncation headers
    bus.dead_letter(p, reason="r", source_topic="t", value=b"small", topic="elsewhere")
    assert p.sent[1]["value"] == b"small" and p.sent[1]["topic"] == "elsewhere"
    assert "dl_value_bytes" not in dict(p.sent[1]["headers"])
