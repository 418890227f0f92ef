"""The public surface of ``driftloop.events``: ``__all__`` says exactly what is exported."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import pytest

from driftloop import events
from driftloop.events import media

SUBMODULES = sorted(m.name for m in pkgutil.iter_modules(events.__path__))


def _public(module: ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, ModuleType) and name != "annotations"
    }


def test_package_all_is_what_it_exports():
    assert len(events.__all__) == len(set(events.__all__))
    assert set(events.__all__) == _public(events)


@pytest.mark.parametrize("name", SUBMODULES)
def test_each_submodule_all_names_its_own_definitions(name):
    module = importlib.import_module(f"driftloop.events.{name}")
    exported = set(module.__all__)
    assert exported <= _public(module)
    for attr in exported:
        value = getattr(module, attr)
        if callable(value) and hasattr(value, "__module__"):
            assert value.__module__ == module.__name__, f"{name}.{attr} is re-exported"


def test_every_package_export_comes_from_a_submodule_all():
    defined = set().union(
        *(importlib.import_module(f"driftloop.events.{n}").__all__ for n in SUBMODULES)
    )
    assert set(events.__all__) <= defined


@pytest.mark.parametrize(
    ("header", "essence", "params"),
    [
        ("Application/JSON; Charset=UTF-8", "application/json", {"charset": "UTF-8"}),
        (' text/plain ;format="fixed"', "text/plain", {"format": "fixed"}),
        ("application/cloudevents+json", "application/cloudevents+json", {}),
        ("", "", {}),
        (None, "", {}),
        ("image/png;;bad;q=1", "image/png", {"q": "1"}),
    ],
)
def test_media_parse(header, essence, params):
    assert media.parse(header) == (essence, params)
    assert media.media_type(header) == essence


def test_media_predicates():
    assert media.is_json("application/json; charset=utf-8")
    assert media.is_json("application/problem+json") and media.is_json("TEXT/JSON")
    assert not media.is_json(None) and not media.is_json("application/jsonx")
    assert media.is_cloudevents_structured(" application/cloudevents+json; charset=utf-8")
    assert media.is_cloudevents_batch("application/cloudevents-batch+json")
    assert not media.is_cloudevents_structured(events.BATCH)
    assert media.is_text("text/csv") and not media.is_text("image/png")


def test_producers_send_only_declared_keys():
    """Every key a driftloop producer puts in ``data`` is a field of its payload model."""
    from driftloop.serving.stream import parse_record, prediction_event
    from driftloop.serving.v2 import Prediction
    from flink.transforms.join import labeled_event

    raw = events.new_event(events.INPUT, "app", b"x", model="digits")
    pred = prediction_event(
        parse_record(raw, None), Prediction("p", "digits", "3", {"label": 1}), 2.5
    )
    assert events.PredictionData.parse(pred.data).model_extra == {}
    for truth in (1, "x" * 400_000):  # scored, and too large to score
        fb = events.new_event(
            events.FEEDBACK, "app", {"prediction_id": pred.id, "model": "digits", "truth": truth}
        )
        out = labeled_event(events.to_structured(pred), events.to_structured(fb))
        data = events.LabeledData.parse(out.data)
        assert data.model_extra == {}
        assert data.metric is not None and (data.quality is not None or data.quality_error)
