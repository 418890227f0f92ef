"""Drift check on 1,000,000 x 20 numeric features: driftloop vs Evidently vs a scipy loop.

Same data, same run. driftloop uses a reference profile computed once (as stored beside a
model version); the timed part is the check of the current window. Baselines:

* Evidently's ``DataDriftPreset`` (normalized Wasserstein per column at this size), run in
  its own environment under ``.cache/bench-drift-venv`` (created here on first use: it
  pins pandas < 2.3, which the library environment does not);
* ``scipy.stats.ks_2samp`` per feature.

Prints medians, the ratios, and the largest differences of the statistics:
KS statistic and p-value against scipy, normalized Wasserstein against Evidently.

    .venv/bin/python bench/drift.py [--rows 1000000] [--features 20] [--skip-evidently]
        [--out-json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from driftloop.drift import DriftConfig, build_profile, detect  # noqa: E402

CACHE = ROOT / ".cache"
EVIDENTLY_VENV = CACHE / "bench-drift-venv"
EVIDENTLY_REQS = ["evidently==0.7.23", "pandas>=2.2,<2.3", "scipy", "numpy"]

EVIDENTLY_SCRIPT = r"""
import json, sys, time
import numpy as np, pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
d = np.load(sys.argv[1])
names = [f"f{j:02d}" for j in range(d["ref"].shape[0])]
ref = pd.DataFrame(d["ref"].T, columns=names)
cur = pd.DataFrame(d["cur"].T, columns=names)
t = time.perf_counter()
snap = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
seconds = time.perf_counter() - t
values = {}
for m in snap.dict()["metrics"]:
    cfg = m["config"]
    if cfg.get("type", "").endswith("ValueDrift"):
        values[cfg["column"]] = {"method": cfg["method"], "value": m["value"]}
print(json.dumps({"seconds": seconds, "values": values}))
"""


def ensure_evidently() -> Path:
    py = EVIDENTLY_VENV / "bin" / "python"
    check = [str(py), "-c", "import evidently, pandas; assert pandas.__version__ < '2.3'"]
    if py.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return py
    print("creating the Evidently environment (one-off)...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(EVIDENTLY_VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *EVIDENTLY_REQS], check=True)
    return py


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5, help="timed runs of driftloop's check")
    ap.add_argument("--scipy-repeat", type=int, default=3)
    ap.add_argument("--skip-evidently", action="store_true")
    ap.add_argument("--out-json", help="also write driftloop's figures to this JSON file")
    args = ap.parse_args()
    n, k = args.rows, args.features

    rng = np.random.default_rng(2026)
    shifts = np.zeros(k)
    shifts[: k // 4] = 0.3  # clearly shifted
    shifts[k // 4 : k // 2] = 0.01  # tiny shifts: p-values flag them, distances do not
    ref = rng.normal(size=(k, n))
    cur = rng.normal(size=(k, n)) + shifts[:, None]
    names = [f"f{j:02d}" for j in range(k)]
    ref_cols = dict(zip(names, ref, strict=True))
    cur_cols = dict(zip(names, cur, strict=True))
    print(
        f"data: {n:,} rows x {k} features; shifts 0.3 SD on {k // 4}, 0.01 SD on "
        f"{k // 2 - k // 4}, none on {k - k // 2}"
    )

    t = time.perf_counter()
    profile = build_profile(ref_cols, max_sample=None)
    t_profile = time.perf_counter() - t
    detect(profile, cur_cols)  # warm-up
    times, cpu = [], []
    for _ in range(args.repeat):
        t, c = time.perf_counter(), time.process_time()
        result = detect(profile, cur_cols)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    t_ours = statistics.median(times)
    if args.out_json:
        import os

        Path(args.out_json).write_text(json.dumps({
            "bench": "drift", "load_1m": os.getloadavg()[0], "cpus": os.cpu_count(),
            "args": vars(args), "check_s": t_ours, "check_cpu_s": statistics.median(cpu),
            "rows_per_s": n / t_ours, "rows_per_core_s": n / statistics.median(cpu),
            "features": k}, indent=1))
    scipy_cfg = DriftConfig(ks_p_value="scipy")
    times_sp = []
    for _ in range(args.scipy_repeat):
        t = time.perf_counter()
        result_sp = detect(profile, cur_cols, scipy_cfg)
        times_sp.append(time.perf_counter() - t)
    t_ours_sp = statistics.median(times_sp)

    from scipy import stats

    scipy_times, ks = [], []
    for _ in range(args.scipy_repeat):
        t = time.perf_counter()
        ks = [stats.ks_2samp(ref[j], cur[j]) for j in range(k)]
        scipy_times.append(time.perf_counter() - t)
    t_scipy = statistics.median(scipy_times)

    feats = result.features
    sp_feats = result_sp.features
    d_diff = max(abs(feats[nm].scores["ks"] - r.statistic) for nm, r in zip(names, ks, strict=True))
    p_diff = max(
        abs(sp_feats[nm].scores["ks_p_value"] - r.pvalue) for nm, r in zip(names, ks, strict=True)
    )
    p_lim = max(
        abs(feats[nm].scores["ks_p_value_limit"] - r.pvalue)
        for nm, r in zip(names, ks, strict=True)
    )
    flagged_p = sum(r.pvalue < 0.05 for r in ks)

    print(f"driftloop profile (once, stored with the version): {t_profile:.2f} s")
    print(
        f"driftloop check: median {t_ours:.3f} s over {args.repeat} runs "
        f"(KS statistic + limit p-value, PSI, normalized Wasserstein per feature)"
    )
    print(f"scipy ks_2samp loop: median {t_scipy:.2f} s over {args.scipy_repeat} runs")
    print(
        f"driftloop check with scipy's finite-n KS p-values (ks_p_value='scipy'): "
        f"median {t_ours_sp:.2f} s over {args.scipy_repeat} runs"
    )
    print(
        f"  ratio scipy / driftloop: {t_scipy / t_ours:.1f}x (default), "
        f"{t_scipy / t_ours_sp:.1f}x (same p-values as scipy)"
    )
    print(
        f"  KS statistic max |diff| vs scipy: {d_diff:.3g}; p-value max |diff|: {p_diff:.3g} "
        f"(limit-distribution p-value: {p_lim:.3g})"
    )
    print(
        f"  features flagged: KS p<0.05 {flagged_p}/{k}; driftloop default "
        f"(normalized Wasserstein >= 0.1) {len(result.drifted_features)}/{k}"
    )

    if not args.skip_evidently:
        py = ensure_evidently()
        data = CACHE / "bench-drift" / "data.npz"
        data.parent.mkdir(parents=True, exist_ok=True)
        np.savez(data, ref=ref, cur=cur)
        script = CACHE / "bench-drift" / "evidently_run.py"
        script.write_text(EVIDENTLY_SCRIPT)
        print("running Evidently's DataDriftPreset (takes minutes)...", flush=True)
        try:
            out = subprocess.run(
                [str(py), str(script), str(data)], capture_output=True, text=True, check=False
            )
        finally:
            data.unlink(missing_ok=True)  # 300+ MB of input
        if out.returncode != 0:
            print(out.stderr[-2000:])
            raise SystemExit("Evidently run failed")
        ev = json.loads(out.stdout.strip().splitlines()[-1])
        w_diff = max(
            abs(feats[nm].scores["wasserstein"] - ev["values"][nm]["value"]) for nm in names
        )
        ev_flag = sum(v["value"] >= 0.1 for v in ev["values"].values())
        method = {v["method"] for v in ev["values"].values()}
        print(f"Evidently DataDriftPreset: {ev['seconds']:.1f} s (one run), method {method}")
        print(f"  ratio Evidently / driftloop: {ev['seconds'] / t_ours:.0f}x")
        print(
            f"  normalized Wasserstein max |diff| vs Evidently: {w_diff:.3g}; "
            f"flagged {ev_flag}/{k} (driftloop {len(result.drifted_features)}/{k})"
        )


if __name__ == "__main__":
    main()
