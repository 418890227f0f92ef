"""Hostile input to feedback-intake (functions-framework's app in-process, real Kafka):
every request costs a 4xx naming the field and the rule, never a 500 or a dropped
connection, and a bad event in a batch fails alone."""

from __future__ import annotations

import json

import pytest

from driftloop import events as ev
from driftloop import topics
from driftloop.errors import MAX_FIELDS
from driftloop.http import Request
from tests.fixtures.intake import (
    feedback,
    intake_client,
    post_batch,
    post_binary,
    unique_source,
)


@pytest.fixture
def client(intake_app):
    return intake_app


def ids_in_kafka(kafka, source):
    return sorted(e.id for e in kafka.read_events(topics.FEEDBACK) if e.source == source)


def structured(src, i=0, **data):
    obj = ev.to_structured(feedback(src, i))
    obj["data"] = {**obj["data"], **data}
    return obj


def post_raw(client, text, content_type=ev.STRUCTURED, **headers):
    return client.post("/", headers={"content-type": content_type, **headers},
                       content=text.encode("utf-8", "surrogatepass"))


def field_rules(r):
    return {(f["field"], f["rule"]) for f in r.json()["fields"]}


def nested(depth):
    return "[" * depth + "1" + "]" * depth


# ------------------------------------------------------------------ deep JSON


@pytest.mark.parametrize("depth", [900, 10_000])
def test_deep_json_is_400_in_every_mode(client, kafka, depth):
    src = unique_source()
    text = json.dumps(structured(src)).replace('"truth": 0', f'"truth": {nested(depth)}')
    r = post_raw(client, text)
    assert r.status_code == 400, r.text
    assert ("body", "max-depth") in field_rules(r)

    r = post_raw(client, f"[{text}]", ev.BATCH)
    assert r.status_code == 400 and ("body", "max-depth") in field_rules(r)

    headers, _ = ev.to_http_binary(feedback(src, 1))
    data = f'{{"prediction_id": "p", "model": "digits", "truth": {nested(depth)}}}'
    r = client.post("/", headers=headers, content=data.encode())
    assert r.status_code == 400 and ("data", "max-depth") in field_rules(r)
    assert ids_in_kafka(kafka, src) == []


def test_depth_limit_is_the_setting(settings_factory, kafka):
    c, service = intake_client(settings_factory(max_json_depth=6))
    src = unique_source()
    ok = structured(src, 1, truth=[[[[1]]]])  # event, data and 4 arrays: 6 levels
    deep = structured(src, 2, truth=[[[[[1]]]]])
    assert post_raw(c, json.dumps(ok)).status_code == 202
    r = post_raw(c, json.dumps(deep))
    assert r.status_code == 400 and ("body", "max-depth") in field_rules(r)
    assert ids_in_kafka(kafka, src) == [f"{src}-1"]
    service.close()


# ------------------------------------------------------------------ numbers


@pytest.mark.parametrize(("field", "literal"), [
    ("reward", "9" * 400),
    ("truth", "9" * 4301),
    ("reward", "1" * 5000 + ".5"),
    ("reward", "1e400"),
    ("truth", "-" + "7" * 309),
])
def test_numbers_beyond_a_double_are_400(client, kafka, field, literal):
    src = unique_source()
    text = json.dumps(structured(src)).replace('"truth": 0', f'"{field}": {literal}')
    r = post_raw(client, text)
    assert r.status_code == 400, r.text
    assert (f"data.{field}", "number-range") in field_rules(r)
    assert ids_in_kafka(kafka, src) == []


# ------------------------------------------------------------------ text


@pytest.mark.parametrize("where", ["id", "source", "ext", "truth"])
def test_lone_surrogates_are_400_naming_the_field(client, kafka, where):
    src = unique_source()
    obj = structured(src)
    if where == "truth":
        obj["data"]["truth"] = "a\ud800b"
        name = "data.truth"
    elif where == "ext":
        obj["appext"] = "\udc00"
        name = "appext"
    else:
        obj[where] = obj[where] + "\ud83d"
        name = where
    r = post_raw(client, json.dumps(obj))
    assert r.status_code == 400, r.text
    assert (name, "unicode") in field_rules(r)
    assert ids_in_kafka(kafka, src) == []


def test_body_that_is_not_utf8_is_400(client):
    r = client.post("/", headers={"content-type": ev.STRUCTURED}, content=b'{"id": "\xed\xa0\x80"}')
    assert r.status_code == 400 and ("body", "utf-8") in field_rules(r)


def test_control_characters_in_attributes_are_400(client, kafka):
    src = unique_source()
    obj = structured(src)
    obj["subject"] = "line\nbreak"
    obj["appext"] = "nul\u0000"
    r = post_raw(client, json.dumps(obj))
    assert r.status_code == 400
    assert {("subject", "cloudevents-string"), ("appext", "cloudevents-string")} <= field_rules(r)
    assert ids_in_kafka(kafka, src) == []


@pytest.mark.parametrize("value", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59",
                                   "2026-01-02", "2026-01-02T03:04:05Z\n", "yesterday"])
def test_times_out_of_range_or_not_rfc3339_are_400(client, kafka, value):
    src = unique_source()
    r = post_raw(client, json.dumps({**structured(src), "time": value}))
    assert r.status_code == 400, r.text
    assert ("time", "rfc3339") in field_rules(r)
    if "\n" not in value:  # a header cannot carry a newline
        headers, body = ev.to_http_binary(feedback(src, 1))
        r = client.post("/", headers={**headers, "ce-time": value}, content=body)
        assert r.status_code == 400 and ("time", "rfc3339") in field_rules(r)
    assert ids_in_kafka(kafka, src) == []


def test_times_in_range_with_offsets_are_accepted_as_utc(client, kafka):
    src = unique_source()
    when = "2026-01-02T01:00:00.1234567+05:30"
    r = post_raw(client, json.dumps({**structured(src), "time": when}))
    assert r.status_code == 202, r.text
    (e,) = [e for e in kafka.read_events(topics.FEEDBACK) if e.source == src]
    assert ev.format_time(e.time) == "2026-01-01T19:30:00.123456Z"


# ------------------------------------------------------------------ names and ids


@pytest.mark.parametrize(("data", "field"), [
    ({"model": "digits\n"}, "data.model"),
    ({"version": "1\n"}, "data.version"),
    ({"prediction_id": "\u0000invalid"}, "data.prediction_id"),
    ({"prediction_id": "pred 1"}, "data.prediction_id"),
    ({"prediction_id": "p" * 257}, "data.prediction_id"),
    ({"prediction_id": "préd"}, "data.prediction_id"),
])
def test_names_and_prediction_ids_are_full_matches(client, kafka, data, field):
    src = unique_source()
    r = post_raw(client, json.dumps(structured(src, **data)))
    assert r.status_code == 400, r.text
    assert field in {f for f, _ in field_rules(r)}
    assert ids_in_kafka(kafka, src) == []


@pytest.mark.parametrize(("attr", "value"), [
    ("id", "fb 1"), ("id", "x" * 257), ("id", "fb-1\n"), ("source", "my app"),
    ("source", "s" * 257), ("source", "app-ä"),
])
def test_event_ids_and_sources_follow_the_id_pattern(client, kafka, attr, value):
    src = unique_source()
    obj = structured(src)
    obj[attr] = value
    r = post_raw(client, json.dumps(obj))
    assert r.status_code == 400, r.text
    assert (attr, "safe-id") in field_rules(r) or (attr, "cloudevents-string") in field_rules(r)
    assert ids_in_kafka(kafka, src) == []


def test_binary_mode_ids_follow_the_id_pattern(settings_factory, kafka):
    c, service = intake_client(settings_factory())
    src = unique_source()
    headers, body = ev.to_http_binary(feedback(src, 1))
    r = c.post("/", headers={**headers, "ce-source": "my app"}, content=body)
    assert r.status_code == 400 and ("source", "safe-id") in field_rules(r)
    # A server hands non-ASCII header bytes over as Latin-1 text.
    answer = service.handle(Request.post({**headers, "ce-id": "caf\xe9"}, body))
    assert answer.status == 400
    assert ("id", "safe-id") in {(f["field"], f["rule"]) for f in json.loads(answer.body)["fields"]}
    assert ids_in_kafka(kafka, src) == []
    service.close()


def test_model_extension_must_match_the_data(client, kafka):
    src = unique_source()
    r = post_raw(client, json.dumps({**structured(src, 1), "model": "faces"}))
    assert r.status_code == 400, r.text
    (f,) = [f for f in r.json()["fields"] if f["field"] == "model"]
    assert f["rule"] == "equals data.model" and "faces" in f["message"]

    headers, body = ev.to_http_binary(feedback(src, 2))
    r = client.post("/", headers={**headers, "ce-model": "faces"}, content=body)
    assert r.status_code == 400 and ("model", "equals data.model") in field_rules(r)

    same = {**structured(src, 3), "model": "digits"}
    assert post_raw(client, json.dumps(same)).status_code == 202
    assert ids_in_kafka(kafka, src) == [f"{src}-3"]


# ------------------------------------------------------------------ batches


def test_one_hostile_event_in_a_batch_fails_alone(client, kafka):
    src = unique_source()
    items = [
        json.dumps(structured(src, 0)),
        json.dumps({**structured(src, 1), "id": "bad\ud800"}),
        json.dumps(structured(src, 2)),
        json.dumps(structured(src, 3)).replace('"truth": 3', '"reward": ' + "9" * 400),
        json.dumps({**structured(src, 4), "time": "9999-12-31T23:59:59-23:59"}),
        json.dumps(structured(src, 5, model="digits\n")),
        json.dumps(structured(src, 6)),
    ]
    r = post_raw(client, "[" + ",".join(items) + "]", ev.BATCH)
    assert r.status_code == 207, r.text
    body = r.json()
    assert body["accepted"] == 3 and body["rejected"] == 4
    statuses = [x["status"] for x in body["results"]]
    assert statuses == [202, 400, 202, 400, 400, 400, 202]
    fields = [{f["field"] for f in x.get("fields", [])} for x in body["results"]]
    assert fields[1] == {"id"} and fields[3] == {"data.reward"}
    assert fields[4] == {"time"} and fields[5] == {"data.model"}
    assert body["results"][1]["id"] is None  # an id that breaks the pattern is not echoed
    assert ids_in_kafka(kafka, src) == [f"{src}-0", f"{src}-2", f"{src}-6"]


def test_batch_size_is_capped_with_413(settings_factory, kafka):
    c, service = intake_client(settings_factory(intake_max_batch_events=5))
    src = unique_source()
    r = post_batch(c, "/", [feedback(src, i) for i in range(6)])
    assert r.status_code == 413
    assert ("body", "max-items") in field_rules(r)
    assert post_batch(c, "/", [feedback(src, i) for i in range(5)]).status_code == 202
    assert ids_in_kafka(kafka, src) == sorted(f"{src}-{i}" for i in range(5))
    service.close()


def test_a_mebibyte_of_empty_items_does_not_amplify(client):
    body = b"[" + b",".join([b"{}"] * ((1024 * 1024 - 2) // 3)) + b"]"
    r = client.post("/", headers={"content-type": ev.BATCH}, content=body)
    assert r.status_code == 413
    assert len(r.content) < 1024


def test_batch_answers_stay_bounded_per_event(client):
    noisy = {"specversion": "1.0", **{f"Bad{i}": 1 for i in range(3 * MAX_FIELDS)}}
    items = [{}] * 500 + [noisy] * 500
    r = client.post("/", headers={"content-type": ev.BATCH}, content=json.dumps(items))
    assert r.status_code == 400
    results = r.json()["results"]
    assert len(results) == 1000
    assert all("message" not in x and x["fields"] for x in results)  # the fields say it all
    assert len(results[-1]["fields"]) == MAX_FIELDS + 1  # the rest counted, not listed
    assert results[-1]["fields"][-1]["rule"] == "max-errors"
    assert len(r.content) <= 1000 * 3 * 1024


def test_messages_quoting_input_are_clipped(client):
    obj = {**structured(unique_source()), "type": "t" * 100_000}
    r = post_raw(client, json.dumps(obj))
    assert r.status_code == 400 and len(r.content) < 2048


# ------------------------------------------------------------------ routes


def test_wrong_methods_are_405_with_allow(client):
    r = client.get("/")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    for path in ("/metrics", "/healthz", "/openapi.json"):
        r = client.post(path, content=b"{}")
        assert r.status_code == 405 and r.headers["allow"] == "GET", path


def test_an_event_larger_than_a_kafka_record_fails_alone(settings_factory, kafka):
    """The body limit lets it in, the producer's record limit does not: that event is a
    413 of its own (never a 503 that a client would retry forever); the others are written."""
    c, service = intake_client(settings_factory(kafka_max_message_bytes=64 * 1024,
                                                intake_send_timeout_s=5))
    src = unique_source()
    big = feedback(src, 1, note="x" * (100 * 1024))
    r = post_batch(c, "/", [feedback(src, 0), big, feedback(src, 2)])
    assert r.status_code == 207, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == [202, 413, 202]
    assert results[1]["fields"][0]["rule"] == "max-record-size"
    r = post_batch(c, "/", [big])
    assert r.status_code == 400 and r.json()["results"][0]["status"] == 413
    r = post_binary(c, "/", big)
    assert r.status_code == 413 and "retry-after" not in r.headers
    assert ids_in_kafka(kafka, src) == [f"{src}-0", f"{src}-2"]
    service.close()
