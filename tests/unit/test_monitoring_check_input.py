"""drift-check's pure input handling: missing values per feature, ping models, request fields."""

from __future__ import annotations

import math

import numpy as np
import pytest

from driftloop.errors import BadRequest
from driftloop.monitoring.check_input import (
    check_fields,
    numbers_or_nan,
    ping_models,
    split_missing,
)
from driftloop.monitoring.window import columns


def test_missing_values_are_split_off_and_counted():
    kept, n = split_missing(np.array([1.0, math.nan, 2.0, math.inf]), infinite_missing=False)
    assert n == 1 and kept.tolist()[:2] == [1.0, 2.0] and math.isinf(kept[2])
    kept, n = split_missing(np.array([1.0, math.nan, -math.inf]), infinite_missing=True)
    assert n == 2 and kept.tolist() == [1.0]
    kept, n = split_missing(np.array(["a", None, "b"], dtype=object), infinite_missing=True)
    assert n == 1 and kept.tolist() == ["a", "b"]
    kept, n = split_missing(np.array([1, 2]), infinite_missing=True)
    assert n == 0 and kept.tolist() == [1, 2]


def test_a_null_categorical_value_stays_missing_not_the_label_nan():
    cols = columns([{"label": "3"}, {"label": math.nan}, {"label": "4"}], ["label"])
    assert cols["label"].tolist() == ["3", None, "4"]


def test_ping_models_are_an_object_field_bounded_and_deduplicated():
    assert ping_models(None, 3) is None
    assert ping_models({}, 3) is None
    assert ping_models({"models": ["a", "b", "a"]}, 3) == ["a", "b"]
    for data in (["a"], "a", 7, True):
        with pytest.raises(BadRequest) as e:
            ping_models(data, 3)
        assert e.value.fields[0].field == "data" and e.value.fields[0].rule == "object"
    with pytest.raises(BadRequest) as e:
        ping_models({"models": ["a", "b", "c", "d"]}, 3)
    assert e.value.fields[0].rule == "max-items"
    with pytest.raises(BadRequest) as e:
        ping_models({"models": ["ok", "../x", "a\n"]}, 3)
    assert [f.field for f in e.value.fields] == ["data.models[1]", "data.models[2]"]


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "", "a/./b.csv", "a\\b.csv", "w\x00.csv"])
def test_window_keys_that_escape_or_are_empty_are_refused(key):
    (err,) = check_fields({"model": "digits", "window_key": key})
    assert (err.field, err.rule) == ("window_key", "relative-key")


def test_every_field_error_at_once():
    errors = check_fields({"model": "", "version": "../1", "window": [1], "window_key": 3})
    assert {(e.field, e.rule) for e in errors} == {
        ("model", "required"),
        ("version", "safe-name"),
        ("window_key", "one-of"),
        ("window", "columns"),
        ("window_key", "string"),
    }
    assert check_fields({"model": "digits", "version": "2", "window_key": "w/x.parquet"}) == []


def test_text_in_a_numeric_column_of_a_stream_window_is_missing():
    col = np.array(["0.5", "n/a", None, "True", "2"], dtype=object)
    col[3] = True
    out = numbers_or_nan(col)
    assert out[0] == 0.5 and out[4] == 2.0 and np.isnan(out[[1, 2, 3]]).all()
    assert split_missing(out, infinite_missing=True)[1] == 3
