"""The model catalogue: each family declared once, and an added entry (plus its model
class) is all serving, the registry, quality and MLServer's runtimes need."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from driftloop import catalogue, quality
from driftloop.blob import open_store
from driftloop.catalogue import FAMILIES, Family, FirstVersion, Sample
from driftloop.registry import DEPLOY_SETTINGS, Registry
from driftloop.serving import bootstrap, models
from driftloop.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SERVING_PYTHON = ROOT / ".venv-serving" / "bin" / "python"


class Counter:
    """A model family for the test: counts the bytes of its input."""

    modality = "image"

    def __init__(self, scale: int) -> None:
        self.scale = scale

    @classmethod
    def from_artifact(cls, artifact: Mapping[str, bytes], *, limits: Any = None) -> Counter:
        return cls(json.loads(artifact["config.json"])["scale"])

    @classmethod
    def initial_version(cls) -> FirstVersion:
        return FirstVersion({"config.json": b'{"scale": 2}'}, lineage={"weights": "none"})

    @staticmethod
    def sample() -> Sample:
        return Sample(b"abc", {"label": 6})

    def predict(self, media: bytes | None, tensor: Any | None) -> dict[str, Any]:
        return {"label": len(media or b"") * self.scale, "confidence": 1.0}


COUNTER = Family(
    "counter",
    task="object-detection",
    modality="image",
    metric="accuracy",
    higher_is_better=True,
    loader=f"{__name__}:Counter",
    drift_features=("brightness_mean",),
    output_features=("label",),
)


@pytest.fixture
def counter() -> Iterator[Family]:
    FAMILIES["counter"] = COUNTER
    try:
        yield COUNTER
    finally:
        del FAMILIES["counter"]


def test_every_family_is_complete_and_its_code_resolves() -> None:
    assert list(FAMILIES) == ["speech", "ocr", "faces", "objects", "digits"]
    for name, entry in FAMILIES.items():
        assert entry.name == name
        assert entry.metric in quality.METRICS
        assert entry.modality in ("audio", "image")
        assert entry.drift_features and entry.output_features
        cls = entry.model_class()
        for method in ("from_artifact", "initial_version", "sample"):
            assert callable(getattr(cls, method)), (name, method)
    assert FAMILIES["digits"].runtime == "seldon.runtimes.digits.DigitsRuntime"
    assert FAMILIES["speech"].runtime_class == "SpeechRuntime"
    retrainable = {n: catalogue.load_path(f.trainer) for n, f in FAMILIES.items() if f.trainer}
    assert set(retrainable) == {"digits"}
    assert retrainable["digits"].model == "digits"


def test_the_server_loads_every_family_by_default() -> None:
    assert Settings().serving_model_list == list(FAMILIES)


def test_quality_reads_the_catalogue() -> None:
    assert quality.MODELS is FAMILIES
    assert quality.spec("ocr") is FAMILIES["ocr"]
    with pytest.raises(KeyError, match="unknown model 'nope'; known: digits, faces"):
        quality.spec("nope")


def test_load_path_names_a_bad_path() -> None:
    with pytest.raises(ValueError, match="module:name"):
        catalogue.load_path("driftloop.catalogue")


def test_an_added_entry_serves_registers_and_scores(counter: Family, tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, blob_url=(tmp_path / "blobs").as_uri())
    registry = Registry(open_store(settings.resolved_blob_url, settings))
    assert bootstrap.ensure_models(registry, ["counter"]) == {"counter": "1"}
    assert registry.get("counter", "1").lineage == {"weights": "none"}
    deploy = json.loads(registry.store.get(f"models/counter/1/artifact/{DEPLOY_SETTINGS}"))
    assert deploy["implementation"] == "seldon.runtimes.counter.CounterRuntime"
    model = models.load("counter", registry.artifact("counter", "1"))
    output = model.predict(Counter.sample().data, None)
    assert output["label"] == 6
    assert quality.score("counter", output, Counter.sample().truth) == 1.0
    assert quality.prediction_features("counter", output) == {"label": 6.0}


def test_an_unknown_model_is_refused_by_name() -> None:
    with pytest.raises(KeyError, match="unknown model 'counter'"):
        models.load("counter", {})


def test_mlserver_runtimes_are_made_from_the_catalogue() -> None:
    """In the serving venv: each entry's runtime path imports as MLServer imports it, a
    new entry gets one too, and a family may not hide a real module of seldon.runtimes."""
    assert SERVING_PYTHON.exists(), "make setup creates .venv-serving"
    script = """
import importlib, pickle
from driftloop.catalogue import FAMILIES, Family
FAMILIES["counter"] = Family("counter", "object-detection", "image", "iou", True, "m:C")
from seldon.runtimes import RUNTIMES
from seldon.runtimes.base import DriftloopRuntime
for name, path in RUNTIMES.items():
    module, _, cls = path.rpartition(".")
    runtime = getattr(importlib.import_module(module), cls)
    assert issubclass(runtime, DriftloopRuntime) and runtime.family == name, path
    assert pickle.loads(pickle.dumps(runtime)) is runtime
print(sorted(RUNTIMES))
from seldon.runtimes import families
FAMILIES["base"] = Family("base", "t", "image", "accuracy", True, "x:y")
try:
    families.install()
except RuntimeError as e:
    print(e)
"""
    done = subprocess.run(
        [str(SERVING_PYTHON), "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "['counter', 'digits', 'faces', 'objects', 'ocr', 'speech']"
    assert lines[1] == "family 'base' would hide the module seldon.runtimes.base: rename the family"


def test_raw_samples_go_to_the_first_family_of_their_modality() -> None:
    from driftloop.raw_samples import sample_inputs

    got = [(s.modality, s.content_type, s.model) for s in sample_inputs(2, 2)]
    assert got == [
        ("audio", "audio/wav", "speech"),
        ("audio", "audio/wav", "speech"),
        ("image", "image/png", "ocr"),
        ("image", "image/jpeg", "ocr"),
    ]
