"""Quality estimated before labels, against the accuracy the labels later show: digits drift.

The digits scenario of the demo and ``bench/loop.py``: version 1 of ``digits`` (trained as
``DigitsModel.initial_version`` trains it, on scikit-learn's digits, split seed 0), its
holdout halved at random each run - one half the labeled reference window the calibration
is fitted on, the other half the live window - then the live window turned 90° (the
rotated digits the demo injects as drift), fully and half of it; last, the fully rotated
window once labels of the shift came in (calibration refitted on half of it, estimated on
the other half: what a version calibrated after the shift, e.g. the retrained one, gets).

Per run and window: the estimate (``driftloop.monitoring.estimate``: the window's
confidences through the calibration, isotonic and histogram binning) and the realized
accuracy of the same predictions; the error is |estimate - realized|. Baselines in the same
run: the mean raw confidence (no calibration) and the reference accuracy carried forward
(what one assumes without an estimate). Prints medians over ``--runs``.

    .venv/bin/python bench/quality_estimate.py [--runs 50] [--prior-weight K] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from driftloop.monitoring.estimate import PRIOR_WEIGHT, estimate, fit  # noqa: E402
from driftloop.serving.models import digits  # noqa: E402

GOAL = 0.05
WINDOWS = {"before shift": 0.0, "half rotated": 0.5, "after shift": 1.0}


def rotate(x: np.ndarray) -> np.ndarray:
    return np.stack([np.rot90(r.reshape(8, 8)).reshape(-1) for r in x])


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--prior-weight", type=float, default=PRIOR_WEIGHT)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    train_set, holdout = digits.split(digits.load_dataset())
    model = digits.DigitsModel.from_artifact(digits.train(train_set, {}))
    rows: dict[str, dict[str, list[float]]] = {w: {} for w in WINDOWS}
    for run in range(args.runs):
        rng = np.random.default_rng(run)
        order = rng.permutation(len(holdout))
        ref, live = order[: len(order) // 2], order[len(order) // 2 :]
        out = model.classify(holdout.X[ref])
        ref_conf = np.asarray(out["scores"])
        ref_right = (np.asarray(out["labels"]) == holdout.y[ref]).astype(float)
        cals = {
            m: fit(ref_conf, ref_right, method=m, prior_weight=args.prior_weight)
            for m in ("isotonic", "histogram")
        }
        for window, share in WINDOWS.items():
            x = holdout.X[live].copy()
            turned = rng.uniform(size=len(live)) < share
            if turned.any():
                x[turned] = rotate(x[turned])
            pred = model.classify(x)
            conf = np.asarray(pred["scores"])
            realized = float((np.asarray(pred["labels"]) == holdout.y[live]).mean())
            figures = {
                "realized": realized,
                "raw confidence": float(conf.mean()),
                "reference carried": float(ref_right.mean()),
            }
            for m, cal in cals.items():
                e = estimate(cal, conf, model="digits", version="1")
                assert e is not None
                figures[m] = e.value
            if share == 1.0:  # the same rotated window, once labels of the shift came in:
                # calibration refitted on half of it, estimated on the other half
                cut = len(live) // 2
                right = (np.asarray(pred["labels"]) == holdout.y[live]).astype(float)
                recal = fit(conf[:cut], right[:cut], prior_weight=args.prior_weight)
                e = estimate(recal, conf[cut:], model="digits", version="1")
                assert e is not None
                rows.setdefault("after, recalibrated", {}).setdefault("realized", []).append(
                    float(right[cut:].mean())
                )
                rows["after, recalibrated"].setdefault("isotonic", []).append(e.value)
                rows["after, recalibrated"].setdefault("|isotonic - realized|", []).append(
                    abs(e.value - float(right[cut:].mean()))
                )
            for k, v in figures.items():
                rows[window].setdefault(k, []).append(v)
                if k != "realized":
                    rows[window].setdefault(f"|{k} - realized|", []).append(abs(v - realized))
    medians = {w: {k: statistics.median(v) for k, v in r.items()} for w, r in rows.items()}
    if args.json:
        print(json.dumps({"runs": args.runs, "goal": GOAL, "medians": medians}, indent=2))
        return 0
    print(
        f"digits v1, {args.runs} runs, windows of {len(holdout) - len(holdout) // 2} "
        f"predictions, calibration on {len(holdout) // 2} labeled; medians"
    )
    names = ["realized", "isotonic", "histogram", "raw confidence", "reference carried"]
    print(f"{'window':20} " + " ".join(f"{n:>17}" for n in names))
    for w, m in medians.items():
        print(f"{w:20} " + " ".join(f"{m[n]:17.3f}" if n in m else f"{'-':>17}" for n in names))
    print("error |estimate - realized|:")
    for w, m in medians.items():
        errs = " ".join(
            f"{m[k]:17.3f}" if (k := f"|{n} - realized|") in m else f"{'-':>17}" for n in names[1:]
        )
        print(f"{w:20} {'':>17} {errs}")
    iso = {w: m["|isotonic - realized|"] for w, m in medians.items()}
    ok = all(v <= GOAL for v in iso.values())
    print(
        f"goal: isotonic error within {GOAL} -> {'met' if ok else 'NOT met'} "
        f"({', '.join(f'{w} {v:.3f}' for w, v in iso.items())})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
