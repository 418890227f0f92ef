"""``driftloop models`` and ``driftloop predict`` in-process (typer's runner)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from driftloop.blob import FileStore
from driftloop.cli import app
from driftloop.local.process import free_port
from driftloop.registry import Registry
from driftloop.serving.bootstrap import ensure_models


def test_models_json_lists_tasks_versions_aliases_metrics(tmp_path, monkeypatch):
    registry = Registry(FileStore(tmp_path / "blobs"))
    ensure_models(registry, ["digits", "ocr"])
    monkeypatch.setenv("DRIFTLOOP_BLOB_URL", (tmp_path / "blobs").as_uri())
    r = CliRunner().invoke(app, ["models", "--json"])
    assert r.exit_code == 0, r.output
    rows = {m["name"]: m for m in json.loads(r.stdout)["models"]}
    assert rows["digits"]["task"] == "classification" and rows["digits"]["metric"] == "accuracy"
    assert rows["ocr"]["task"] == "ocr" and rows["ocr"]["aliases"] == {"champion": "1"}
    assert rows["digits"]["versions"][0]["metrics"]["accuracy"] > 0.95
    table = CliRunner().invoke(app, ["models"])
    assert table.exit_code == 0 and "digits" in table.stdout


def test_predict_without_a_server_is_one_clear_error(tmp_path, monkeypatch):
    f = tmp_path / "x.json"
    f.write_text("[[0, 1]]")
    monkeypatch.setenv("DRIFTLOOP_SERVING_URL", f"http://127.0.0.1:{free_port()}")
    r = CliRunner().invoke(app, ["predict", "--model", "digits", str(f)])
    assert r.exit_code == 1
    assert "unreachable" in r.output


def test_predict_needs_a_file_or_a_batch(tmp_path):
    r = CliRunner().invoke(app, ["predict", "--model", "digits"])
    assert r.exit_code != 0 and "FILE" in r.output
    r = CliRunner().invoke(app, ["predict", "--model", "digits", str(tmp_path / "missing.wav")])
    assert r.exit_code != 0 and "no such file" in r.output
