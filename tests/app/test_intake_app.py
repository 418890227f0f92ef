"""feedback-intake in-process (functions-framework's app with a WSGI test client).

Validation answers come before Kafka is touched; accepted events go to the real broker
of the test session.
"""

from __future__ import annotations

import json

import pytest

from driftloop import events as ev
from driftloop import topics
from driftloop.intake import OPENAPI_PATH
from driftloop.local.process import free_port
from tests.fixtures.intake import (
    feedback,
    intake_client,
    post_batch,
    post_binary,
    post_structured,
    unique_source,
)


@pytest.fixture
def client(intake_app):
    return intake_app


def ids_in_kafka(kafka, source):
    return [e.id for e in kafka.read_events(topics.FEEDBACK) if e.source == source]


def test_three_modes_accepted_and_durable(client, kafka):
    src = unique_source()
    e1, e2, e3, e4 = (feedback(src, i) for i in range(4))
    assert post_binary(client, "/", e1).status_code == 202
    r = post_structured(client, "/", e2)
    assert r.status_code == 202 and r.json() == {"id": e2.id, "source": src, "status": "accepted"}
    r = post_batch(client, "/", [e3, e4])
    assert r.status_code == 202
    assert [x["status"] for x in r.json()["results"]] == [202, 202]
    assert sorted(ids_in_kafka(kafka, src)) == sorted(e.id for e in (e1, e2, e3, e4))
    rec = next(r for r in kafka.read_records(topics.FEEDBACK)
               if dict(r.headers).get("ce_id") == e1.id.encode())
    assert rec.key == b"digits"  # Kafka key = model name


def base_event(src):
    return {"specversion": "1.0", "id": f"{src}-bad", "source": src, "type": ev.FEEDBACK,
            "datacontenttype": "application/json",
            "data": {"prediction_id": "p", "model": "digits", "truth": 1}}


def with_data(src, **data):
    obj = base_event(src)
    obj["data"] = {**obj["data"], **data}
    return obj


BAD_CASES = {
    "missing prediction_id": (lambda s: {**base_event(s), "data": {"model": "m", "truth": 1}},
                              400, "data.prediction_id"),
    "missing model": (lambda s: {**base_event(s), "data": {"prediction_id": "p", "truth": 1}},
                      400, "data.model"),
    "no truth nor reward": (lambda s: {**base_event(s), "data": {"prediction_id": "p",
                                                                  "model": "m"}}, 400, "data"),
    "wrong-typed prediction_id": (lambda s: with_data(s, prediction_id=12), 400,
                                  "data.prediction_id"),
    "wrong-typed reward": (lambda s: with_data(s, reward="high"), 400, "data.reward"),
    "path model name": (lambda s: with_data(s, model="../x"), 400, "data.model"),
    "unknown type": (lambda s: {**base_event(s), "type": "io.example.other"}, 400, "type"),
    "missing id": (lambda s: {k: v for k, v in base_event(s).items() if k != "id"}, 400, "id"),
    "data not an object": (lambda s: {**base_event(s), "data": [1, 2]}, 400, "data"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_inputs_are_4xx_naming_the_field_and_nothing_is_written(client, kafka, case):
    src = unique_source()
    build, status, field = BAD_CASES[case]
    r = client.post("/", headers={"content-type": ev.STRUCTURED},
                    content=json.dumps(build(src)))
    assert r.status_code == status, r.text
    body = r.json()
    assert field in {f["field"] for f in body["fields"]}, body
    assert all(f["rule"] and f["message"] for f in body["fields"])
    assert ids_in_kafka(kafka, src) == []


def test_nan_reward_refused(client, kafka):
    src = unique_source()
    raw = json.dumps(base_event(src)).replace('"truth": 1', '"reward": NaN')
    r = client.post("/", headers={"content-type": ev.STRUCTURED}, content=raw)
    assert r.status_code == 400
    assert {"field": "data.reward", "rule": "finite"}.items() <= r.json()["fields"][0].items()
    assert ids_in_kafka(kafka, src) == []


def test_invalid_json_and_not_a_cloudevent(client):
    r = client.post("/", headers={"content-type": ev.STRUCTURED}, content=b"{nope")
    assert r.status_code == 400 and r.json()["fields"][0]["field"] == "body"
    r = client.post("/", headers={"content-type": "application/json"}, content=b"{}")
    assert r.status_code == 415
    r = client.post("/", headers={"ce-specversion": "1.0", "ce-id": "x", "ce-source": "s",
                                  "ce-type": ev.FEEDBACK, "content-type": "application/json"},
                    content=b"{nope")
    assert r.status_code == 400 and r.json()["fields"][0]["field"] == "data"


def test_binary_mode_missing_headers_all_named(client):
    r = client.post("/", headers={"ce-specversion": "1.0", "content-type": "application/json"},
                    content=b"{}")
    assert r.status_code == 400
    assert {f["field"] for f in r.json()["fields"]} == {"ce-id", "ce-source", "ce-type"}


def test_oversize_body_refused(settings_factory, kafka):
    c, service = intake_client(settings_factory(intake_max_body_bytes=2048))
    src = unique_source()
    big = feedback(src, 1, note="x" * 4096)
    r = post_structured(c, "/", big)
    assert r.status_code == 413 and r.json()["fields"][0]["rule"] == "max-size"
    assert ids_in_kafka(kafka, src) == []
    service.close()


def test_batch_is_per_event(client, kafka):
    src = unique_source()
    good = feedback(src, 1)
    bad = ev.to_structured(feedback(src, 2))
    bad["data"]["model"] = "Bad Name"
    r = client.post("/", headers={"content-type": ev.BATCH},
                    content=json.dumps([ev.to_structured(good), bad]))
    assert r.status_code == 207
    body = r.json()
    assert body["accepted"] == 1 and body["rejected"] == 1
    assert body["results"][0] == {"index": 0, "id": good.id, "status": 202}
    assert body["results"][1]["status"] == 400
    assert body["results"][1]["fields"][0]["field"] == "data.model"
    assert ids_in_kafka(kafka, src) == [good.id]


def test_batch_all_invalid_is_400(client):
    r = client.post("/", headers={"content-type": ev.BATCH}, content=json.dumps([{"x": 1}]))
    assert r.status_code == 400 and r.json()["rejected"] == 1


def test_bearer_auth_when_tokens_configured(settings_factory, kafka):
    c, service = intake_client(settings_factory(intake_tokens="s3cret,other"))
    src = unique_source()
    assert post_binary(c, "/", feedback(src, 1)).status_code == 401
    r = post_binary(c, "/", feedback(src, 2), headers={"authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert "s3cret" not in r.text
    r = post_binary(c, "/", feedback(src, 3), headers={"authorization": "Bearer other"})
    assert r.status_code == 202
    assert ids_in_kafka(kafka, src) == [f"{src}-3"]
    service.close()


def test_kafka_unavailable_is_503_with_retry_after(settings_factory):
    dead = f"127.0.0.1:{free_port()}"
    c, service = intake_client(settings_factory(kafka_bootstrap=dead, intake_send_timeout_s=1,
                                                intake_retry_after_s=7))
    r = post_binary(c, "/", feedback(unique_source(), 1))
    assert r.status_code == 503
    assert r.headers["retry-after"] == "7"
    r = post_batch(c, "/", [feedback(unique_source(), 1)])
    assert r.status_code == 503 and r.headers["retry-after"] == "7"
    service.close()


def test_health_metrics_openapi(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    post_binary(client, "/", feedback(unique_source(), 1))
    client.post("/", headers={"content-type": "application/json"}, content=b"{}")
    metrics = client.get("/metrics").text
    assert 'driftloop_intake_events_accepted_total{mode="binary"} 1.0' in metrics
    assert 'driftloop_intake_events_rejected_total{reason="unsupported_media_type"} 1.0' in metrics
    assert "driftloop_intake_request_seconds_bucket" in metrics
    assert client.get("/openapi.json").json() == json.loads(OPENAPI_PATH.read_text())
    assert client.get("/").status_code == 405
    assert client.get("/nope").status_code == 404
