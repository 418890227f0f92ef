"""The goals table ``make bench`` ends with: read from the benches' JSON, never made up."""

from __future__ import annotations

import json
from pathlib import Path

from bench.goals import rows


def _by_figure(folder: Path) -> dict[str, dict[str, str]]:
    return {r["figure"]: r for r in rows(folder)}


def test_each_goal_is_met_missed_or_not_run_from_the_figures(tmp_path: Path) -> None:
    (tmp_path / "dispatcher.json").write_text(json.dumps({"medians": {"dispatcher": 1200.0}}))
    (tmp_path / "serving.json").write_text(json.dumps({
        "overhead_p50_ms": {"digits": {"json": 6.0, "binary_rest": 2.5, "grpc_raw": 4.0},
                            "ocr": {"json": 9.0, "binary_rest": 5.0, "grpc_raw": 3.5}},
        "mlserver_floor_p50_ms": {"digits": 1.9, "ocr": 2.1},
        "digits_rps_batched": {},  # the batched run was skipped
    }))
    (tmp_path / "broken.json").write_text("{")  # unreadable files are passed over
    got = _by_figure(tmp_path)
    assert got["dispatcher events/s on one route"]["status"] == "met"
    assert got["dispatcher events/s on one route"]["measured"] == "1200.00 ev/s"
    # the best binary path counts, not the JSON path
    assert got["digits serving overhead p50 (best binary path)"]["status"] == "met"
    assert got["ocr serving overhead p50 (best binary path)"]["measured"] == "3.50 ms"
    assert got["ocr serving overhead p50 (best binary path)"]["status"] == "missed"
    assert got["digits MLServer's own floor p50 (no-op model)"]["status"] == "-"
    assert got["faces serving overhead p50 (best binary path)"]["status"] == "not run"
    assert got["digits req/s, 8 clients, adaptive batching (best path)"]["status"] == "not run"
    assert got["intake throughput / hello (acks=all, binary)"]["status"] == "not run"


def test_a_bench_may_declare_its_own_goals(tmp_path: Path) -> None:
    (tmp_path / "flink_preprocess.json").write_text(json.dumps({"goals": [
        {"figure": "audio p1 / loop", "goal": ">= 0.7x", "measured": "0.31x", "met": False}]}))
    assert _by_figure(tmp_path)["audio p1 / loop"]["status"] == "missed"
