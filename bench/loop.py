"""Loop latency: seconds from the triggering event to the new version serving all traffic.

Starts a local stack with the loop's parts (``driftloop.retrain.stackrun``: Kafka,
MLServer with digits keeping its inputs, feedback-intake, Flink's join and archive,
Prometheus and Pushgateway, retrain-trigger and promote under functions-framework, the
dispatcher) on free loopback ports, then runs ``driftloop.demo.loop.run_loop`` through it:
healthy traffic, injected drift (rotated digits; predictions over V2 REST, labels through
feedback-intake, labeled records from the join), drift-check's drift.detected on
``driftloop.events`` → dispatcher → retrain-trigger → training subprocess (reading the
kept inputs) → model.trained → dispatcher → promote (offline gate, canary, bake with live
traffic) → the champion endpoint answers with the new version.

Baseline, measured in the same run: the training pipeline alone (in-process, same data);
the loop's figure is printed as a ratio of it. Medians over ``--runs``.

    .venv/bin/python bench/loop.py [--runs 1] [--bake-s 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--bake-s", type=float, default=10.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from driftloop.blob import open_store
    from driftloop.demo.loop import run_loop
    from driftloop.policy import load_policy
    from driftloop.retrain.pipeline import train_model
    from driftloop.retrain.stackrun import loop_stack

    work = Path(tempfile.mkdtemp(prefix="driftloop-bench-loop-"))
    loops: list[float] = []
    baselines: list[float] = []
    reports = []
    t_up = time.monotonic()
    with loop_stack(work / "state", DRIFTLOOP_PROMOTE_BAKE_S=str(args.bake_s)) as (settings, ep):
        up_s = time.monotonic() - t_up
        for i in range(args.runs):
            report = run_loop(settings, via="stack", trigger_url=ep["retrain-trigger"],
                              intake_url=ep["feedback-intake"],
                              progress=lambda m: print(f"  {m}", file=sys.stderr))
            if report.phase != "promoted":
                print(f"run {i}: {report.phase}: {report.reason}", file=sys.stderr)
                return 1
            loops.append(report.timings["trigger_to_serving_s"])
            reports.append(report.to_dict())
            t = time.perf_counter()
            train_model(settings, load_policy(settings.policy_dir, "digits"),
                        run_id=f"baseline-{i}", emit=False)
            baselines.append(time.perf_counter() - t)
            store = open_store(settings.resolved_blob_url, settings)
            for key in list(store.list("runs/")):  # the next run starts outside the cooldown
                store.delete(key)
            # ...and from drifted traffic again: back to version 1.
            from driftloop.promotion.service import PromotionService

            reset = PromotionService(settings, store=store, background=False)
            try:
                reset.promote("digits", "1", reason="bench reset")
            finally:
                reset.close()
    loop_s, base_s = statistics.median(loops), statistics.median(baselines)
    out = {"loop_s_median": round(loop_s, 2), "training_alone_s_median": round(base_s, 2),
           "ratio": round(loop_s / base_s, 2), "bake_s": args.bake_s, "runs": args.runs,
           "stack_up_s": round(up_s, 1), "reports": reports}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    r = reports[-1]
    print(f"trigger → new version serving all traffic: {loop_s:.1f} s (median of {args.runs}; "
          f"bake period {args.bake_s:.0f} s; stack start {up_s:.0f} s not counted)")
    print(f"baseline, the training pipeline alone: {base_s:.1f} s → loop/baseline "
          f"= {loop_s / base_s:.1f}x")
    print(f"breakdown: {json.dumps({k: round(v, 1) for k, v in r['timings'].items()})}")
    print(f"accuracy: {json.dumps({k: round(v, 3) for k, v in r['quality'].items()})}; "
          f"canary split {r['canary_split']}")
    print(f"training data: {json.dumps(r['counts'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
