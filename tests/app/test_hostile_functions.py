"""Hostile input to drift-check, retrain-trigger and promote (functions-framework's app
in-process, real S3 server and Kafka): the generic edge rules every function shares —
the body-size limit and the one JSON parser (nesting, numbers, Unicode, times) — answer
a 4xx naming the field and the rule before any work is done.

Function-specific rules (a drift-check models list, alert labels, promote versions) are
tested with each function."""

from __future__ import annotations

import json

import pytest

from driftloop import events as ev
from driftloop.monitoring.check import DriftCheckService
from tests.fixtures.loop import function_client

FUNCTIONS = {
    # name: (folder, target, whether it takes plain JSON besides CloudEvents)
    "drift-check": ("drift-check", "drift_check", True),
    "retrain-trigger": ("retrain-trigger", "retrain_trigger", True),
    "promote": ("promote", "promote", False),
}


def service_for(name, env, settings):
    if name == "drift-check":
        return DriftCheckService(settings, store=env.store)
    if name == "retrain-trigger":
        from driftloop.retrain.trigger import RetrainTrigger

        return RetrainTrigger(settings, store=env.store)
    from driftloop.promotion.service import PromotionService

    return PromotionService(settings, store=env.store, background=False)


@pytest.fixture(params=sorted(FUNCTIONS))
def fn(request, loop_env):
    """(name, client, takes_plain_json) for each function, on the default settings."""
    name = request.param
    folder, target, plain = FUNCTIONS[name]
    service = service_for(name, loop_env, loop_env.settings)
    yield name, function_client(folder, target, service), plain
    if hasattr(service, "close"):
        service.close()


def event_type(name):
    return {"drift-check": ev.PING, "retrain-trigger": ev.PING,
            "promote": ev.MODEL_TRAINED}[name]


def structured(name, **attrs):
    obj = {"specversion": "1.0", "id": "hostile-1", "source": "test-hostile",
           "type": event_type(name), "datacontenttype": "application/json",
           "data": {"model": "digits", "version": "1"}}
    obj.update(attrs)
    return obj


def post_structured(client, text):
    return client.post("/", headers={"content-type": ev.STRUCTURED},
                       content=text.encode("utf-8", "surrogatepass"))


def field_rules(r):
    return {(f["field"], f["rule"]) for f in r.json()["fields"]}


# ------------------------------------------------------------------ body size


def test_body_over_the_default_8_mib_is_413_not_an_empty_body(fn):
    name, client, _ = fn
    limit = 8 * 1024 * 1024
    obj = structured(name, data={"model": "digits", "pad": "x" * limit})
    r = post_structured(client, json.dumps(obj))
    assert r.status_code == 413, r.text
    assert ("body", "max-size") in field_rules(r)
    assert str(limit) in r.json()["message"]


def test_body_limit_is_the_setting(loop_env):
    settings = loop_env.settings.model_copy(update={"function_max_body_bytes": 4096})
    for name, (folder, target, plain) in sorted(FUNCTIONS.items()):
        service = service_for(name, loop_env, settings)
        client = function_client(folder, target, service)
        big = json.dumps(structured(name, data={"model": "digits", "pad": "x" * 5000}))
        r = post_structured(client, big)
        assert r.status_code == 413, (name, r.text)
        assert r.json()["fields"][0] == {"field": "body", "rule": "max-size",
                                         "message": "at most 4096 bytes"}
        if plain:  # a plain JSON request over the limit is refused the same way
            r = client.post("/", headers={"content-type": "application/json"},
                            content=json.dumps({"models": ["digits"], "pad": "x" * 5000}))
            assert r.status_code == 413, (name, r.text)
        if hasattr(service, "close"):
            service.close()


# ------------------------------------------------------------------ the shared parser


def nested(depth):
    return "[" * depth + "1" + "]" * depth


@pytest.mark.parametrize("depth", [900, 10_000])
def test_deep_json_is_400(fn, depth):
    name, client, plain = fn
    text = json.dumps(structured(name)).replace('"version": "1"', f'"deep": {nested(depth)}')
    r = post_structured(client, text)
    assert r.status_code == 400, r.text
    assert ("body", "max-depth") in field_rules(r)

    headers = {"ce-specversion": "1.0", "ce-id": "hostile-2", "ce-source": "test-hostile",
               "ce-type": event_type(name), "content-type": "application/json"}
    r = client.post("/", headers=headers, content=f'{{"model": "digits", "x": {nested(depth)}}}')
    assert r.status_code == 400 and ("data", "max-depth") in field_rules(r)

    r = client.post("/", headers={"content-type": ev.BATCH}, content=f"[{text}]")
    assert r.status_code == 400 and ("body", "max-depth") in field_rules(r)
    if plain:
        r = client.post("/", headers={"content-type": "application/json"},
                        content=f'{{"model": "digits", "window": {{"x": {nested(depth)}}}}}')
        assert r.status_code == 400 and ("body", "max-depth") in field_rules(r)


@pytest.mark.parametrize("literal", ["9" * 400, "9" * 4301, "1" * 5000 + ".0", "1e999"])
def test_numbers_beyond_a_double_are_400(fn, literal):
    name, client, plain = fn
    text = json.dumps(structured(name, data={"model": "digits", "version": "1", "value": 0}))
    r = post_structured(client, text.replace('"value": 0', f'"value": {literal}'))
    assert r.status_code == 400, r.text
    assert ("data.value", "number-range") in field_rules(r)
    if plain:
        doc = f'{{"model": "digits", "window": {{"x": [1, {literal}]}}}}'
        r = client.post("/", headers={"content-type": "application/json"}, content=doc)
        assert r.status_code == 400, r.text
        assert ("window.x.1", "number-range") in field_rules(r)


@pytest.mark.parametrize("attr", ["id", "source", "subject", "appext"])
def test_lone_surrogates_and_controls_in_attributes_are_400(fn, attr):
    name, client, _ = fn
    r = post_structured(client, json.dumps(structured(name, **{attr: "x\ud800"})))
    assert r.status_code == 400, r.text
    assert (attr, "unicode") in field_rules(r)
    r = post_structured(client, json.dumps(structured(name, **{attr: "x\u0000y"})))
    assert r.status_code == 400, r.text
    assert (attr, "cloudevents-string") in field_rules(r)


def test_lone_surrogates_in_plain_json_are_400(loop_env):
    for name, (folder, target, plain) in sorted(FUNCTIONS.items()):
        if not plain:  # promote takes CloudEvents only
            continue
        client = function_client(folder, target, service_for(name, loop_env, loop_env.settings))
        r = client.post("/", headers={"content-type": "application/json"},
                        content=b'{"model": "digits\\udfff"}')
        assert r.status_code == 400, (name, r.text)
        assert ("model", "unicode") in field_rules(r)


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+01:00",
                                  "2026-02-30T00:00:00Z"])
def test_times_out_of_range_are_400(fn, when):
    name, client, _ = fn
    r = post_structured(client, json.dumps(structured(name, time=when)))
    assert r.status_code == 400, r.text
    assert ("time", "rfc3339") in field_rules(r)
    headers = {"ce-specversion": "1.0", "ce-id": "hostile-3", "ce-source": "test-hostile",
               "ce-type": event_type(name), "ce-time": when, "content-type": "application/json"}
    r = client.post("/", headers=headers, content=b'{"model": "digits"}')
    assert r.status_code == 400 and ("time", "rfc3339") in field_rules(r)
