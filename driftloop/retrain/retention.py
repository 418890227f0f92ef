"""The kept-inputs retention job: every model's policy applied to its ``inputs/`` partitions
and to its claim checks (``raw/``, ``preprocessed/``).

Run by ``driftloop inputs expire`` and by retrain-trigger on the ``inputs-retention``
PingSource tick (``eventing/42-pingsource-inputs-retention.yaml``, hourly). A model with
``only_with_feedback`` first reads its labeled records for the input references they name,
so an input that got feedback stays until ``retention_days``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from driftloop.blob import BlobStore
from driftloop.errors import DriftloopError
from driftloop.inputlog import RetentionReport, expire_claim_checks, expire_inputs
from driftloop.policy import load_policy, policy_models
from driftloop.retrain.data import read_labeled

__all__ = ["TASK", "expire_all"]

log = logging.getLogger("driftloop.retrain")
TASK = "inputs-retention"
"""The ``task`` of the PingSource tick that runs this job."""


def expire_all(
    store: BlobStore, policy_dir: Path, *, now: datetime, models: list[str] | None = None
) -> list[RetentionReport]:
    """One retention pass per model with a policy (or the ones named)."""
    reports = []
    for model in models if models is not None else policy_models(policy_dir):
        try:
            cfg = load_policy(policy_dir, model).inputs
        except DriftloopError as e:
            report = RetentionReport(model, errors=[f"policy: {e.message}"])
            reports.append(report)
            continue
        refs: set[str] = set()
        if cfg.only_with_feedback:
            refs = {
                str(r.data["input_ref"])
                for r in read_labeled(store, model)
                if isinstance(r.data.get("input_ref"), str)
            }
        report = expire_inputs(store, model, cfg, now=now, referenced=refs)
        expire_claim_checks(store, model, cfg, now=now, report=report)
        log.info("inputs of %s: %s", model, report.to_dict())
        reports.append(report)
    return reports
