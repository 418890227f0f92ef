"""The one table ``make bench`` ends with: each figure, its goal, what this run measured,
met or missed.

Reads the benches' JSON files in ``--dir`` (``.driftloop/bench``). The goals of
feedback-intake and the functions' cold starts are declared here (ratios against the
baseline measured in the same run); any bench may add its own by writing a ``goals``
list in its JSON (``{"figure", "goal", "measured", "met"}`` each), shown as given. A
bench that did not run shows as ``not run``. Exit status 0 either way: the table reports,
it does not gate.

    .venv/bin/python bench/goals.py [--dir .driftloop/bench] [--out-json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ("feedback-intake", "drift-check", "retrain-trigger", "promote")
FAMILIES = ("digits", "faces", "ocr", "speech", "objects")
"""The model families ``bench/serving.py`` measures by default."""


@dataclass(frozen=True)
class Goal:
    """One figure of one bench's JSON and the bound it must keep."""

    bench: str
    figure: str
    goal: str
    read: Callable[[dict[str, Any]], float]
    ok: Callable[[float], bool]
    unit: str = "x"


def _intake(doc: dict[str, Any], kind: str, metric: str) -> float:
    med = doc["medians"]
    return float(med[kind][metric]) / float(med["hello"][metric])


def _cold(name: str, key: str) -> Callable[[dict[str, Any]], float]:
    return lambda doc: float(doc["functions"][name][key])


GOALS: list[Goal] = [
    Goal(
        "intake",
        "intake throughput / hello (acks=all, binary)",
        ">= 0.9x",
        lambda d: _intake(d, "intake", "events_per_s"),
        lambda v: v >= 0.9,
    ),
    Goal(
        "intake",
        "intake p50 latency / hello",
        "<= 1.5x",
        lambda d: _intake(d, "intake", "p50_ms"),
        lambda v: v <= 1.5,
    ),
    Goal(
        "intake",
        "batch events/s / hello requests/s",
        ">= 10x",
        lambda d: _intake(d, "batch", "events_per_s"),
        lambda v: v >= 10,
    ),
]
for _name in FUNCTIONS:
    GOALS += [
        Goal(
            "cold_start",
            f"{_name} start -> first event / hello",
            "<= 1.25x",
            _cold(_name, "ratio"),
            lambda v: v <= 1.25,
        ),
        Goal(
            "cold_start",
            f"{_name} start -> first event",
            "< 1 s",
            _cold(_name, "first_event_s"),
            lambda v: v < 1.0,
            " s",
        ),
        Goal(
            "cold_start",
            f"{_name} RSS after the first event",
            "<= 100 MiB",
            _cold(_name, "rss_mib"),
            lambda v: v <= 100,
            " MiB",
        ),
    ]


GOALS += [
    Goal(
        "dispatcher",
        "dispatcher events/s on one route",
        ">= 1000",
        lambda d: float(d["medians"]["dispatcher"]),
        lambda v: v >= 1000,
        " ev/s",
    ),
    Goal(
        "serving",
        "digits req/s, 8 clients, adaptive batching (best path)",
        ">= 1000",
        lambda d: max(float(v) for v in d["digits_rps_batched"].values()),
        lambda v: v >= 1000,
        " req/s",
    ),
]
for _family in FAMILIES:
    GOALS += [
        Goal(
            "serving",
            f"{_family} serving overhead p50 (best binary path)",
            "<= 3 ms",
            lambda d, f=_family: min(
                float(d["overhead_p50_ms"][f][p]) for p in ("binary_rest", "grpc_raw")
            ),
            lambda v: v <= 3.0,
            " ms",
        ),
        Goal(
            "serving",
            f"{_family} MLServer's own floor p50 (no-op model)",
            "(context)",
            lambda d, f=_family: float(d["mlserver_floor_p50_ms"][f]),
            lambda v: True,
            " ms",
        ),
    ]


def rows(folder: Path) -> list[dict[str, str]]:
    docs: dict[str, dict[str, Any]] = {}
    for f in sorted(folder.glob("*.json")):
        try:
            docs[f.stem] = json.loads(f.read_text())
        except ValueError:
            continue
    out: list[dict[str, str]] = []
    for g in GOALS:
        doc = docs.get(g.bench)
        try:
            value = g.read(doc) if doc is not None else None
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            value = None
        if value is None:
            out.append({"figure": g.figure, "goal": g.goal, "measured": "-", "status": "not run"})
        else:
            out.append(
                {
                    "figure": g.figure,
                    "goal": g.goal,
                    "measured": f"{value:.2f}{g.unit}",
                    "status": "-" if g.goal == "(context)" else (
                        "met" if g.ok(value) else "missed"),
                }
            )
    for doc in docs.values():  # goals other benches declare themselves
        for g in doc.get("goals", []) if isinstance(doc, dict) else []:
            out.append(
                {
                    "figure": str(g.get("figure")),
                    "goal": str(g.get("goal")),
                    "measured": str(g.get("measured")),
                    "status": "met" if g.get("met") else "missed",
                }
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=ROOT / ".driftloop" / "bench")
    ap.add_argument("--out-json", help="also write the table to this JSON file")
    args = ap.parse_args()
    table = rows(args.dir)
    w = max(len(r["figure"]) for r in table)
    head = f"{'figure':<{w}}  {'goal':<11}{'measured':>12}  status"
    print(head)
    print("-" * len(head))
    for r in table:
        print(f"{r['figure']:<{w}}  {r['goal']:<11}{r['measured']:>12}  {r['status']}")
    met = sum(r["status"] == "met" for r in table)
    goals = sum(r["status"] != "-" for r in table)
    print(f"{met} of {goals} goals met")
    if args.out_json:
        Path(args.out_json).write_text(json.dumps(table, indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
