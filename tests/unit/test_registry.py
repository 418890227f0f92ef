"""The registry on the file backend: versions, manifests, aliases with history."""

from __future__ import annotations

import json

import pytest

from driftloop.blob import FileStore
from driftloop.errors import BadRequest, NotFound
from driftloop.registry import Registry


@pytest.fixture
def registry(tmp_path):
    return Registry(FileStore(tmp_path))


def test_versions_increase_and_carry_their_manifest(registry):
    v1 = registry.register("digits", {"model.pkl": b"a"}, metrics={"accuracy": 0.9},
                           lineage={"dataset": "d1"})
    v2 = registry.register("digits", {"model.pkl": b"b", "params.json": b"{}"},
                           metrics={"accuracy": 0.95}, parent=v1.version)
    assert (v1.version, v2.version) == ("1", "2")
    assert registry.versions("digits") == ["1", "2"]
    got = registry.get("digits", "2")
    assert got.parent == "1" and got.metrics == {"accuracy": 0.95}
    assert got.files == ("model.pkl", "params.json")
    assert registry.artifact("digits", "2") == {"model.pkl": b"b", "params.json": b"{}"}
    manifest = json.loads(registry.store.get("models/digits/1/manifest.json"))
    assert manifest["lineage"] == {"dataset": "d1"} and manifest["created"].endswith("Z")
    assert registry.models() == ["digits"]


def test_a_version_without_manifest_is_invisible(registry):
    registry.store.put("models/ocr/1/artifact/config.json", b"{}")
    assert registry.versions("ocr") == []
    # Files without a manifest may be another writer's upload in progress: that number is
    # never reused, so nothing of it is overwritten.
    assert registry.register("ocr", {"config.json": b"{\"n\": 2}"}).version == "2"
    assert registry.store.get("models/ocr/1/artifact/config.json") == b"{}"
    assert registry.versions("ocr") == ["2"]


def test_aliases_move_atomically_and_keep_history(registry):
    for _ in range(3):
        registry.register("faces", {"config.json": b"{}"})
    registry.set_alias("faces", "champion", "1")
    registry.set_alias("faces", "challenger", "3")
    change = registry.set_alias("faces", "champion", "2", reason="promoted")
    assert change.previous == "1"
    assert registry.aliases("faces") == {"champion": "2", "challenger": "3"}
    assert [h.version for h in registry.history("faces", "champion")] == ["1", "2"]
    assert registry.resolve("faces", "champion") == "2"
    assert registry.resolve("faces", "3") == "3"
    registry.clear_alias("faces", "challenger")
    with pytest.raises(NotFound):
        registry.resolve("faces", "challenger")


def test_bad_names_and_missing_versions(registry):
    with pytest.raises(ValueError):
        registry.register("../x", {"a": b""})
    with pytest.raises(BadRequest):
        registry.register("x", {})
    registry.register("x", {"a": b""})
    with pytest.raises(NotFound):
        registry.set_alias("x", "champion", "9")
    with pytest.raises(BadRequest):
        registry.set_alias("x", "prod", "1")
    with pytest.raises(NotFound):
        registry.get("x", "2")


def test_describe_lists_versions_and_aliases(registry):
    registry.register("speech", {"config.json": b"{}"}, metrics={"wer": 0.1})
    registry.set_alias("speech", "champion", "1")
    (row,) = registry.describe()
    assert row["name"] == "speech" and row["aliases"] == {"champion": "1"}
    assert row["versions"][0]["metrics"] == {"wer": 0.1}


def test_challenger_weight_is_bounded_and_defaults_to_zero(registry):
    assert registry.challenger_weight("digits") == 0
    registry.set_challenger_weight("digits", 10)
    assert registry.challenger_weight("digits") == 10
    for bad in (-1, 101, 2.5):
        with pytest.raises(BadRequest):
            registry.set_challenger_weight("digits", bad)
