"""``driftloop drift``, ``drift-profile`` and ``report`` on files and a file:// blob store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from driftloop.blob import open_store
from driftloop.cli import app
from driftloop.drift import build_profile, detect
from driftloop.monitoring.quality import aggregate
from driftloop.monitoring.report import write_report
from driftloop.registry import Registry
from driftloop.settings import Settings


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    ref = pd.DataFrame(
        {"a": rng.normal(size=3000), "b": rng.normal(size=3000), "c": rng.choice(["x", "y"], 3000)}
    )
    cur = pd.DataFrame(
        {
            "a": rng.normal(0.5, 1, 2000),
            "b": rng.normal(size=2000),
            "c": rng.choice(["x", "y"], 2000, p=[0.8, 0.2]),
        }
    )
    ref.to_csv(tmp_path / "ref.csv", index=False)
    cur.to_parquet(tmp_path / "cur.parquet")
    return tmp_path / "ref.csv", tmp_path / "cur.parquet"


def test_drift_json_verdict(files: tuple[Path, Path]) -> None:
    ref, cur = files
    r = CliRunner().invoke(app, ["drift", "--reference", str(ref), "--current", str(cur), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["dataset_drift"] is True
    assert set(doc["features"]) == {"a", "b", "c"}
    for f in doc["features"].values():
        assert set(f) == {"statistic", "value", "threshold", "drifted"}
    assert doc["features"]["a"]["drifted"] and not doc["features"]["b"]["drifted"]


def test_drift_table_and_rules(files: tuple[Path, Path]) -> None:
    ref, cur = files
    r = CliRunner().invoke(
        app,
        [
            "drift",
            "--reference",
            str(ref),
            "--current",
            str(cur),
            "--rule",
            "a=psi:0.9",
            "--rule",
            "c=linf",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "psi" in r.stdout and "linf" in r.stdout and "features drifted" in r.stdout


def test_drift_bad_files_fail_cleanly(files: tuple[Path, Path], tmp_path: Path) -> None:
    ref, _ = files
    (tmp_path / "nan.csv").write_text("a,b,c\n1,,x\n2,3,y\n")
    r = CliRunner().invoke(
        app, ["drift", "--reference", str(ref), "--current", str(tmp_path / "nan.csv")]
    )
    assert r.exit_code != 0 and "NaN" in r.output
    (tmp_path / "x.txt").write_text("nope")
    r = CliRunner().invoke(
        app, ["drift", "--reference", str(ref), "--current", str(tmp_path / "x.txt")]
    )
    assert r.exit_code != 0 and "unknown window format" in r.output


def test_profile_then_report(
    files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref, cur = files
    blob = tmp_path / "blobs"
    monkeypatch.setenv("DRIFTLOOP_BLOB_URL", blob.as_uri())
    monkeypatch.setenv("DRIFTLOOP_STATE_DIR", str(tmp_path))
    store = open_store(blob.as_uri(), Settings())
    reg = Registry(store)
    version = reg.register("digits", {"model.bin": b"w"}).version
    reg.set_alias("digits", "champion", version)
    runner = CliRunner()
    r = runner.invoke(app, ["drift-profile", "--model", "digits", "--data", str(ref)])
    assert r.exit_code == 0, r.output
    assert store.exists(f"models/digits/{version}/reference_profile.json")
    out = tmp_path / "report"
    args = ["report", "--model", "digits", "--current", str(cur), "--out", str(out)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    page = (out / "report.html").read_text()
    assert "digits v1" in page and 'src="data:image/png;base64,iVBOR' in page
    assert [p.name for p in out.iterdir()] == ["report.html"]
    r = runner.invoke(app, ["report", "--model", "nope", "--current", str(cur), "--out", str(out)])
    assert r.exit_code != 0 and "unknown model" in r.output


def test_report_plots_quality_over_time(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    profile = build_profile({"x": rng.normal(size=1000)})
    cur = {"x": rng.normal(1.0, 1, 500)}
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    labeled = [
        (
            t0 + timedelta(minutes=i),
            {
                "model": "digits",
                "version": "1" if i < 60 else "2",
                "metric": "accuracy",
                "quality": float(i % 3 != 0),
            },
        )
        for i in range(120)
    ]
    files = write_report(
        tmp_path,
        model="digits",
        version="2",
        profile=profile,
        result=detect(profile, cur),
        current=cur,
        labeled=labeled,
        quality=aggregate([r for _, r in labeled]),
    )
    assert set(files.images) == {"drift_features", "dist_x", "quality_over_time"}
    page = files.html.read_text()
    assert "Quality" in page and "<td>accuracy</td>" in page


def test_report_shows_estimated_beside_realized_quality(tmp_path: Path) -> None:
    from driftloop.monitoring.quality import QualityStat

    rng = np.random.default_rng(2)
    profile = build_profile({"x": rng.normal(size=500)})
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    labeled = [
        (t0 + timedelta(minutes=i),
         {"model": "digits", "version": "1", "metric": "accuracy", "quality": float(i % 4 != 0)})
        for i in range(40)
    ]
    estimated = [QualityStat("digits", "1", "accuracy", 0.7, 300),
                 QualityStat("digits", "2", "accuracy", 0.9, 80)]  # a canary, no label yet
    files = write_report(
        tmp_path, model="digits", version="1", profile=profile, result=None, current={},
        labeled=labeled, quality=aggregate([r for _, r in labeled]), estimated=estimated,
    )
    page = files.html.read_text()
    assert "<th>estimated</th>" in page and "<th>estimated - realized</th>" in page
    # v1: realized 0.75 on 40 labels, estimated 0.7 on 300 predictions
    assert "<td>v1</td><td>accuracy</td><td>0.75</td><td>40</td><td>0.7</td><td>300</td>" \
        "<td>-0.05</td>" in page
    assert "<td>v2</td><td>accuracy</td><td>-</td><td>0</td><td>0.9</td><td>80</td>" in page
    # without an estimate the columns are not there
    plain = write_report(
        tmp_path / "plain.html", model="digits", version="1", profile=profile, result=None,
        current={}, labeled=labeled, quality=aggregate([r for _, r in labeled]),
    )
    assert "estimated" not in plain.html.read_text().split("<h2>Quality</h2>")[1]
