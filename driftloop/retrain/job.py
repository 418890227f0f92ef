"""The training job's entry point, the same in every backend's container or process:
``python -m driftloop.retrain.job --model M --run-id R [--params JSON]``.

It marks the run ``running``, trains, and marks it ``succeeded`` with the version,
``skipped`` with the reason and counts (too little usable feedback: nothing registered,
nothing to promote) or ``failed`` with the error; the exit code is 0, 0 or 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback

from driftloop.blob import open_store
from driftloop.policy import load_policy
from driftloop.retrain.pipeline import TrainingSkipped, train_model
from driftloop.retrain.state import RunStore, iso, now_utc
from driftloop.settings import Settings


def run_job(settings: Settings, model: str, run_id: str, params: dict[str, object]) -> int:
    store = open_store(settings.resolved_blob_url, settings)
    runs = RunStore(store)
    try:
        run = runs.get(model, run_id)
        reasons = list(run.reasons)
    except Exception:  # a job started by hand has no run record yet
        reasons = []
        from driftloop.retrain.state import Run

        runs.put(Run(model=model, run_id=run_id, status="requested",
                     requested_at=iso(now_utc()), trigger="manual"))
    runs.update(model, run_id, status="running", started_at=iso(now_utc()))
    try:
        policy = load_policy(settings.policy_dir, model)
        result = train_model(settings, policy, run_id=run_id, params=params, reasons=reasons,
                             store=store)
    except TrainingSkipped as skip:
        runs.update(model, run_id, status="skipped", finished_at=iso(now_utc()),
                    skip_reason=skip.reason, metrics=skip.metrics, exit_code=0,
                    skipped_inputs=dict(skip.lineage.get("feedback_skipped_inputs") or {}))
        print(json.dumps(skip.to_dict(), default=str))
        return 0
    except Exception as e:
        runs.update(model, run_id, status="failed", finished_at=iso(now_utc()),
                    error=f"{type(e).__name__}: {e}", exit_code=1)
        traceback.print_exc()
        return 1
    runs.update(model, run_id, status="succeeded", finished_at=iso(now_utc()),
                version=result.version, metrics=dict(result.metrics), exit_code=0)
    print(json.dumps(result.to_dict(), default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="driftloop.retrain.job")
    p.add_argument("--model", required=True)
    p.add_argument("--run-id", required=True)
    p.add_argument("--params", default="{}", help="JSON object merged over the policy's params")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    params = json.loads(a.params)
    if not isinstance(params, dict):
        p.error("--params must be a JSON object")
    return run_job(Settings(), a.model, a.run_id, params)


if __name__ == "__main__":
    sys.exit(main())
