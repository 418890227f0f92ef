"""driftloop.client's pure parts: retry timing, Retry-After parsing, the server's error
body as exceptions, requests built once so retries resend the same identity."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import pytest

from driftloop.client import Feedback, Prediction, RetryPolicy, wire
from driftloop.client.errors import error_from_response, retry_after_s
from driftloop.client.retry import Attempts
from driftloop.errors import PayloadTooLarge, Unauthorized, Unavailable, ValidationFailed


def test_retry_after_is_honoured_and_the_deadline_stops_retries():
    a = Attempts(RetryPolicy(deadline_s=10, backoff_s=0.1, max_backoff_s=1), started=0.0,
                 rng=random.Random(1))
    assert a.next_wait(now=1.0, retry_after=3.0) == 3.0  # exactly what the server asked
    assert a.next_wait(now=8.0, retry_after=3.0) is None  # would end past the deadline
    waits = [a.next_wait(now=0.0, retry_after=None) for _ in range(8)]
    assert all(w is not None and 0 < w <= 1 for w in waits)  # capped backoff with jitter


def test_retry_after_forms():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_s({"retry-after": "2"}) == 2.0
    assert retry_after_s({"retry-after": "Thu, 01 Jan 2026 12:00:05 GMT"}, now) == 5.0
    assert retry_after_s({"retry-after": "soon"}) is None and retry_after_s({}) is None


def test_server_field_errors_become_validation_failed():
    body = json.dumps({"error": "validation_failed", "message": "data.reward: number",
                       "fields": [{"field": "data.reward", "rule": "number", "message": "m"},
                                  {"field": "id", "rule": "safe-id", "message": "n"}]})
    e = error_from_response(400, body.encode(), "feedback")
    assert isinstance(e, ValidationFailed) and e.status == 400
    assert e.reason == "validation_failed"
    assert [(f.field, f.rule) for f in e.fields] == [("data.reward", "number"), ("id", "safe-id")]
    assert isinstance(error_from_response(401, b"{}", "x"), Unauthorized)
    big = error_from_response(413, b'{"error":"payload_too_large","fields":[{"field":"body"}]}',
                              "x")
    assert isinstance(big, PayloadTooLarge) and big.fields[0].field == "body"
    down = error_from_response(503, b"not json", "x")
    assert isinstance(down, Unavailable) and down.status == 503


def test_feedback_request_is_built_once_per_event():
    fb = wire.make_feedback("app", Prediction("p-1", "digits", "3"), truth=1, reward=None,
                            model=None, version=None, id=None)
    assert (fb.model, fb.version) == ("digits", "3")
    (h1, b1), (h2, b2) = wire.single_request(fb), wire.single_request(fb)
    assert h1["ce-id"] == h2["ce-id"] == fb.id and h1["ce-source"] == "app" and b1 == b2
    batch = json.loads(wire.batch_request([fb, fb])[1])
    assert [e["id"] for e in batch] == [fb.id, fb.id]
    with pytest.raises(ValidationFailed) as info:
        wire.make_feedback("app", "p-1", truth=None, reward=None, model=None, version=None,
                           id=None)
    assert {f.field for f in info.value.fields} == {"model", "truth"}


def test_transport_types_round_trip():
    p = Prediction("p", "digits", "2", {"label": 3})
    assert Prediction.from_dict(p.to_dict()) == p
    fb = Feedback(source="a", prediction_id="p", model="digits", reward=0.5)
    assert Feedback.from_dict(fb.to_dict()) == fb
