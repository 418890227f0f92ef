"""CloudEvents bindings and payload validation (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from driftloop import events as ev
from driftloop.errors import BadRequest, UnsupportedMediaType, ValidationFailed

FEEDBACK = {"prediction_id": "p-1", "model": "digits", "truth": 7}


def structured(**over):
    obj = {"specversion": "1.0", "id": "e-1", "source": "app", "type": ev.FEEDBACK,
           "datacontenttype": "application/json", "data": dict(FEEDBACK)}
    obj.update(over)
    return obj


def test_binary_http_round_trip():
    e = ev.new_event(ev.FEEDBACK, "app", FEEDBACK, id="x1", model="digits")
    headers, body = ev.to_http_binary(e)
    (back,) = ev.from_http(headers, body)
    assert (back.id, back.source, back.type, back.data) == ("x1", "app", ev.FEEDBACK, FEEDBACK)
    assert back.extensions["model"] == "digits"
    assert back.time == e.time.replace(microsecond=back.time.microsecond)


def test_structured_http():
    (e,) = ev.from_http({"Content-Type": ev.STRUCTURED}, json.dumps(structured()).encode())
    assert e.id == "e-1" and e.data == FEEDBACK


def test_batch_http_yields_each_event():
    body = json.dumps([structured(id="a"), structured(id="b")]).encode()
    got = ev.from_http({"content-type": ev.BATCH}, body)
    assert [e.id for e in got] == ["a", "b"]


@pytest.mark.parametrize("body", [b"{}", b"[]", b"not json"])
def test_batch_must_be_non_empty_array(body):
    with pytest.raises(BadRequest):
        ev.from_http({"content-type": ev.BATCH}, body)


def test_plain_json_is_not_a_cloudevent():
    with pytest.raises(UnsupportedMediaType) as info:
        ev.from_http({"content-type": "application/json"}, json.dumps(FEEDBACK).encode())
    assert info.value.status == 415


def test_binary_missing_headers_named_all_at_once():
    with pytest.raises(ValidationFailed) as info:
        ev.from_http({"ce-specversion": "1.0", "content-type": "application/json"}, b"{}")
    assert {f.field for f in info.value.fields} == {"ce-id", "ce-source", "ce-type"}


def test_structured_wrong_specversion():
    with pytest.raises(ValidationFailed) as info:
        ev.from_structured(structured(specversion="0.3"))
    assert info.value.fields[0].field == "specversion"


def test_kafka_binary_mode_round_trip_json():
    e = ev.new_event(ev.FEEDBACK, "app", FEEDBACK, subject="s", model="digits")
    rec = ev.to_kafka(e, key="digits")
    assert rec.key == b"digits"
    headers = dict(rec.headers)
    assert headers["ce_type"] == ev.FEEDBACK.encode()
    assert headers["content-type"] == b"application/json"
    assert json.loads(rec.value) == FEEDBACK
    back = ev.from_kafka(rec.value, rec.headers, rec.key)
    assert back == e


def test_kafka_binary_mode_round_trip_bytes():
    payload = b"RIFF\x00\x01binary"
    e = ev.new_event(ev.INPUT, "cam", payload, datacontenttype="audio/wav", model="speech")
    rec = ev.to_kafka(e)
    assert rec.value == payload
    back = ev.from_kafka(rec.value, rec.headers)
    assert back.data == payload and back.datacontenttype == "audio/wav"
    assert back.extensions == {"model": "speech"}


def test_kafka_structured_record_is_read():
    value = json.dumps(structured()).encode()
    e = ev.from_kafka(value, [("content-type", ev.STRUCTURED.encode())])
    assert e.id == "e-1" and e.data == FEEDBACK


def test_kafka_record_without_ce_headers_is_refused():
    with pytest.raises(BadRequest):
        ev.from_kafka(b"{}", [])


def test_kafka_binding_refuses_a_record_without_id_and_survives_hostile_headers():
    """What the SDK's cloudevents.kafka would not keep (see driftloop/events/kafka.py)."""
    base = [("ce_specversion", b"1.0"), ("ce_source", b"app"), ("ce_type", b"t")]
    with pytest.raises(ValidationFailed) as info:
        ev.from_kafka(b"{}", [*base, ("content-type", b"application/json")])
    assert [f.field for f in info.value.fields] == ["ce_id"]
    hostile = [("ce_id", b"a\xff"), ("ce_subject", None), ("content-type", b"text/plain")]
    e = ev.from_kafka(b"raw", [*base, *hostile], b"key")
    assert isinstance(e.id, str) and e.subject == "" and e.time is None
    assert "partitionkey" not in e.extensions


def test_kafka_event_without_time_or_content_type_reads_back_unchanged():
    e = ev.Event(id="x", source="app", type="t", extensions={"partitionkey": "k"})
    rec = ev.to_kafka(e)
    assert rec.key == b"k" and ("ce_partitionkey", b"k") in rec.headers
    assert ev.from_kafka(rec.value, rec.headers, rec.key) == e


def test_structured_bytes_use_data_base64():
    e = ev.new_event(ev.INPUT, "x", b"\x00\xff", datacontenttype="image/png")
    obj = ev.to_structured(e)
    assert "data" not in obj and obj["data_base64"] == "AP8="
    assert ev.from_structured(obj).data == b"\x00\xff"


def test_time_is_rfc3339_utc():
    t = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert ev.format_time(t) == "2026-01-02T03:04:05Z"
    assert ev.parse_time("2026-01-02T03:04:05Z") == t


# ------------------------------------------------------------------ feedback payload


def fields_of(data):
    with pytest.raises(ValidationFailed) as info:
        ev.FeedbackData.parse(data)
    return {(f.field, f.rule) for f in info.value.fields}


def test_feedback_valid_truth_or_reward():
    assert ev.FeedbackData.parse(FEEDBACK).truth == 7
    assert ev.FeedbackData.parse({"prediction_id": "p", "model": "m", "reward": 0.5}).reward == 0.5


def test_feedback_reports_every_bad_field():
    got = fields_of({"prediction_id": 5, "model": "../x", "version": "A B", "reward": "1"})
    assert ("data.prediction_id", "string_type") in got
    assert ("data.model", "safe-name") in got
    assert ("data.version", "safe-name") in got
    assert ("data.reward", "number") in got


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"model": "m", "truth": 1}, ("data.prediction_id", "missing")),
        ({"prediction_id": "p", "truth": 1}, ("data.model", "missing")),
        ({"prediction_id": "p", "model": "m"}, ("data", "truth-or-reward")),
        ({"prediction_id": "p", "model": "m", "reward": float("nan")}, ("data.reward", "finite")),
        ({"prediction_id": "p", "model": "m", "reward": True}, ("data.reward", "number")),
        ({"prediction_id": "p", "model": "m", "truth": [float("inf")]}, ("data.truth", "finite")),
        (
            {"prediction_id": "", "model": "m", "truth": 1},
            ("data.prediction_id", "safe-id"),
        ),
        ({"prediction_id": "p", "model": "M", "truth": 1}, ("data.model", "safe-name")),
    ],
)
def test_feedback_rules(data, expected):
    assert expected in fields_of(data)


def test_feedback_must_be_object():
    assert fields_of([1, 2]) == {("data", "object")}


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"subject": [None]}, "subject"),
        ({"time": 5}, "time"),
        ({"Bad-Name": "x"}, "Bad-Name"),
        ({"ext": {"a": 1}}, "ext"),
        ({"time": "yesterday"}, "time"),
    ],
)
def test_structured_attribute_types(override, field):
    with pytest.raises(ValidationFailed) as info:
        ev.from_structured(structured(**override))
    assert field in {f.field for f in info.value.fields}


# --------------------------------------------------------------------------- the one parser


def test_load_json_bounds_nesting_at_the_given_depth():
    assert ev.load_json(b"[[[1]]]", max_depth=3) == [[[1]]]
    assert ev.load_json(b'{"a": "[[[[[[", "b": [{}]}', max_depth=3) == {"a": "[[[[[[",
                                                                       "b": [{}]}
    for text, depth in ((b"[[[[1]]]]", 3), (b'{"a": [{"b": []}]}', 3),
                        (b"[" * 10_000 + b"]" * 10_000, 64)):
        with pytest.raises(BadRequest) as e:
            ev.load_json(text, max_depth=depth)
        assert e.value.fields[0].rule == "max-depth"


def test_load_json_bounds_the_text_nesting_where_the_parsed_value_is_shallower():
    # a repeated key keeps its last value: the deep first one still counts
    with pytest.raises(BadRequest) as e:
        ev.load_json(b'{"a": [[[[1]]]], "a": 1}', max_depth=3)
    assert e.value.fields[0].rule == "max-depth"
    # many containers, none deeper than the limit; brackets inside strings do not nest
    wide = json.dumps([{"a": {"b": "[[[["}} for _ in range(100)]).encode()
    assert len(ev.load_json(wide, max_depth=3)) == 100
    with pytest.raises(BadRequest):
        ev.load_json(wide, max_depth=2)


@pytest.mark.parametrize("literal", ["9" * 400, "9" * 4301, "-" + "7" * 309, "1e400",
                                     "1" * 5000 + ".5", "1" * 250 + "e99", "-0.5E+0309",
                                     "1E400", "2e+999"])
@pytest.mark.parametrize("text", ["", "caf\u00e9", "caf\u00e9 \u0663" * 100, "\u0663" * 200,
                                  "id e12", "\\u00e9"])
def test_load_json_refuses_numbers_beyond_a_double(literal, text):
    with pytest.raises(ValidationFailed) as e:
        ev.load_json(f'{{"x": [0, {literal}], "t": "{text}"}}'.encode())
    assert [(f.field, f.rule) for f in e.value.fields] == [("x.1", "number-range")]


def test_load_json_keeps_numbers_a_double_holds():
    biggest = int(ev.MAX_DOUBLE)
    assert ev.load_json(f"[{biggest}, -{biggest}, 1e308]".encode()) == [biggest, -biggest, 1e308]


def test_load_json_refuses_lone_surrogates_and_non_utf8():
    with pytest.raises(ValidationFailed) as e:
        ev.load_json(b'{"id": "a\\ud800", "ok": "\\ud83d\\ude00"}')
    assert [(f.field, f.rule) for f in e.value.fields] == [("id", "unicode")]
    with pytest.raises(BadRequest) as e:
        ev.load_json(b'"\xed\xa0\x80"')
    assert e.value.fields[0].rule == "utf-8"


def test_a_batch_element_that_breaks_a_parsing_rule_fails_alone():
    items = ev.split_batch(b'[{"a": 1}, {"a": 1e999}, {"b": "\\udc00"}]')
    assert items[0] == {"a": 1}
    assert isinstance(items[1], ev.RejectedItem) and isinstance(items[2], ev.RejectedItem)
    with pytest.raises(ValidationFailed) as e:
        ev.from_structured(items[1])
    assert e.value.fields[0].field == "a"


@pytest.mark.parametrize("value", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+00:01",
                                   "2026-01-02", "2026-01-02 03:04:05Z", "2026-01-02T03:04:05",
                                   "2026-01-02T03:04:05Z\n", "2026-02-30T00:00:00Z"])
def test_parse_time_is_strict_rfc3339_within_range(value):
    with pytest.raises(ValueError):
        ev.parse_time(value)


def test_parse_time_answers_utc():
    t = ev.parse_time("2026-01-02T01:00:00.123456789+05:30")
    assert ev.format_time(t) == "2026-01-01T19:30:00.123456Z"
