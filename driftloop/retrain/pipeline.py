"""``driftloop train --model M``: data, training, evaluation, registration, the event.

The dataset is the base training data plus labeled feedback from the blob store
(de-duplicated, split by time: the newest share is kept for evaluation). The challenger
is evaluated on the base holdout and on the recent labeled data, the champion on the
same data; the version is registered with metrics, lineage, the evaluation set (so the
promotion gate can re-run both on identical data) and a reference drift profile; then
``io.driftloop.model.trained.v1`` goes to ``driftloop.events``.

A labeled record whose input cannot be read is skipped and counted by reason
(``n_skipped_<reason>``); records whose input is missing or past its retention are also
named (``lineage.feedback_skipped_inputs``). A run left with fewer usable feedback rows than
the policy's ``training.min_feedback_rows`` raises ``TrainingSkipped`` (with the reason and
the counts) instead of training the base data again and asking for a promotion; a run asked
for with its own ``params`` (an experiment by hand) trains on the base data alone too.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from driftloop import events as ev
from driftloop import topics
from driftloop.blob import BlobStore, open_store
from driftloop.inputlog import key_time
from driftloop.policy import Policy
from driftloop.registry import ModelVersion, Registry
from driftloop.retrain.data import LabeledRecord, read_labeled, split_by_time
from driftloop.retrain.state import iso, now_utc
from driftloop.retrain.trainers import RowSkipped, Trainer, trainer_for
from driftloop.settings import Settings

log = logging.getLogger("driftloop.retrain")
SOURCE = "driftloop/retrain"


@dataclass(frozen=True)
class TrainResult:
    model: str
    version: str
    parent: str | None
    metrics: Mapping[str, float]
    lineage: Mapping[str, Any]
    event_id: str | None = None
    timings: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "parent": self.parent,
                "metrics": dict(self.metrics), "lineage": dict(self.lineage),
                "event_id": self.event_id, "timings": dict(self.timings)}


class TrainingSkipped(Exception):
    """The run trained nothing: too little usable feedback. Carries why and the counts."""

    def __init__(self, reason: str, metrics: Mapping[str, float],
                 lineage: Mapping[str, Any]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.metrics = dict(metrics)
        self.lineage = dict(lineage)

    def to_dict(self) -> dict[str, Any]:
        return {"status": "skipped", "reason": self.reason, "version": None,
                "metrics": self.metrics, "lineage": self.lineage}


NAMED_INPUTS = 20
"""Input references named per skip reason in a run's lineage (the counts are complete)."""


def eval_set_key(model: str, run_id: str) -> str:
    return f"runs/{model}/{run_id}/eval.json"


def load_eval_set(store: BlobStore, trainer: Trainer, key: str | None) -> Any:
    """The recent labeled evaluation set a run stored (empty when none)."""
    if not key:
        return trainer.dataset([])
    try:
        return trainer.from_json(json.loads(store.get(key)))
    except KeyError:
        return trainer.dataset([])


def training_rows(trainer: Trainer, records: list[LabeledRecord], store: BlobStore,
                  skipped: Counter[str], named: dict[str, list[str]] | None = None, *,
                  expired_before: datetime | None = None) -> list[tuple[Any, Any]]:
    """The records that make training rows; the others are counted in ``skipped`` by
    reason (never fatal: one unreadable input must not fail every later run). A missing
    kept input from before ``expired_before`` is ``input_expired`` (the retention job
    deleted it); the first references of missing and expired inputs go to ``named``."""
    rows = []
    for rec in records:
        try:
            rows.append(trainer.row(rec.data, store))
        except RowSkipped as e:
            reason = e.reason
            if reason == "input_missing" and e.ref and expired_before is not None:
                at = key_time(e.ref)
                if at is not None and at < expired_before:
                    reason = "input_expired"
            skipped[reason] += 1
            if named is not None and e.ref:
                refs = named.setdefault(reason, [])
                if len(refs) < NAMED_INPUTS:
                    refs.append(e.ref)
            log.warning("labeled record %r skipped: %s", rec.key[:200], e)
    return rows


def _finite(metrics: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)
            and math.isfinite(v)}


def train_model(
    settings: Settings,
    policy: Policy,
    *,
    run_id: str,
    params: Mapping[str, Any] | None = None,
    reasons: list[dict[str, Any]] | None = None,
    store: BlobStore | None = None,
    emit: bool = True,
) -> TrainResult:
    """One training run end to end; raises on failure (the caller records it)."""
    import time

    t0 = time.perf_counter()
    store = store or open_store(settings.resolved_blob_url, settings)
    registry = Registry(store)
    model = policy.model
    trainer = trainer_for(model)
    started = iso(now_utc())

    base_train, holdout = trainer.base()
    labeled = read_labeled(store, model, until=started)
    older, recent = split_by_time(labeled, policy.training.recent_share)
    skipped: Counter[str] = Counter()
    named: dict[str, list[str]] = {}
    expired_before = now_utc() - timedelta(days=policy.inputs.retention_days)
    train_rows = training_rows(trainer, older, store, skipped, named,
                               expired_before=expired_before)
    recent_rows = training_rows(trainer, recent, store, skipped, named,
                                expired_before=expired_before)
    usable = len(train_rows) + len(recent_rows)
    if usable < policy.training.min_feedback_rows and not params:
        counts = {"n_feedback_records": float(len(labeled)), "n_feedback_usable": float(usable),
                  "n_skipped": float(sum(skipped.values())),
                  **{f"n_skipped_{r}": float(n) for r, n in sorted(skipped.items())}}
        why = (f"{usable} usable feedback rows of {len(labeled)} labeled records, "
               f"min_feedback_rows {policy.training.min_feedback_rows}")
        if skipped:
            why += " (skipped: " + ", ".join(f"{r} {n}" for r, n in sorted(skipped.items())) + ")"
        raise TrainingSkipped(f"not enough usable feedback: {why}", counts, {
            "run_id": run_id, "feedback_records": len(labeled), "feedback_usable": usable,
            "feedback_skipped": dict(sorted(skipped.items())),
            "feedback_skipped_inputs": named, "feedback_until": started})
    feedback_train = trainer.dataset(train_rows)
    recent_set = trainer.dataset(recent_rows)
    data = trainer.concat(base_train, feedback_train) if train_rows else base_train
    t_data = time.perf_counter()

    merged = {**policy.training.params, **(params or {})}
    artifact = trainer.train(data, merged)
    t_train = time.perf_counter()

    metrics: dict[str, float] = {
        trainer.metric: trainer.score(artifact, holdout),
        f"holdout_{trainer.metric}": trainer.score(artifact, holdout),
        "n_train": float(trainer.size(data)),
        "n_feedback_train": float(len(train_rows)),
        "n_holdout": float(trainer.size(holdout)),
        "n_recent": float(len(recent_rows)),
        "n_skipped": float(sum(skipped.values())),
        **{f"n_skipped_{reason}": float(n) for reason, n in sorted(skipped.items())},
    }
    if recent_rows:
        metrics[f"recent_{trainer.metric}"] = trainer.score(artifact, recent_set)
    parent = registry.alias(model, "champion")
    if parent is not None:
        champion = registry.artifact(model, parent)
        metrics[f"champion_holdout_{trainer.metric}"] = trainer.score(champion, holdout)
        if recent_rows:
            metrics[f"champion_recent_{trainer.metric}"] = trainer.score(champion, recent_set)
    t_eval = time.perf_counter()

    eval_key = eval_set_key(model, run_id)
    store.put(eval_key, json.dumps(trainer.to_json(recent_set)).encode())
    lineage = {
        "run_id": run_id,
        "base": "sklearn.datasets.load_digits (seed=0 split)" if model == "digits" else "base",
        "base_rows": trainer.size(base_train),
        "feedback_records": len(labeled),
        "feedback_train_rows": len(train_rows),
        "feedback_recent_rows": len(recent_rows),
        "feedback_skipped": dict(sorted(skipped.items())),
        "feedback_skipped_inputs": named,
        "feedback_until": started,
        "feedback_from": labeled[0].time if labeled else None,
        "recent_from": recent[0].time if recent else None,
        "eval_set": eval_key,
        "params": merged,
        "reasons": list(reasons or []),
    }
    mv: ModelVersion = registry.register(model, artifact, metrics=_finite(metrics),
                                         lineage=lineage, parent=parent)
    _save_profile(store, trainer, model, mv.version, artifact,
                  trainer.concat(holdout, recent_set) if recent_rows else holdout)
    t_reg = time.perf_counter()

    event_id = None
    if emit:
        trained = ev.ModelTrainedData(model=model, version=mv.version, parent_version=parent,
                                      metrics=_finite(metrics), run_id=run_id)
        event = ev.new_event(ev.MODEL_TRAINED, SOURCE, trained, model=model)
        from driftloop.bus import make_producer, publish

        producer = make_producer(settings)
        try:
            publish(producer, topics.EVENTS, [event], key=model)
        finally:
            producer.close(timeout=5)
        event_id = event.id
    timings = {"data_s": t_data - t0, "train_s": t_train - t_data, "eval_s": t_eval - t_train,
               "register_s": t_reg - t_eval, "total_s": time.perf_counter() - t0}
    log.info("trained %s v%s (run %s): %s", model, mv.version, run_id, _finite(metrics))
    return TrainResult(model, mv.version, parent, _finite(metrics), lineage, event_id, timings)


def _save_profile(store: BlobStore, trainer: Trainer, model: str, version: str,
                  artifact: Mapping[str, bytes], data: Any) -> None:
    """The reference drift profile of the version: its outputs on the evaluation data."""
    from driftloop.drift import build_profile
    from driftloop.monitoring.profiles import save_profile

    cols = trainer.outputs(artifact, data)
    profile = build_profile(cols, kinds={"label": "categorical", "confidence": "numeric"},
                            source=f"training run outputs on {trainer.size(data)} rows")
    save_profile(store, model, version, profile)
    _save_calibration(store, trainer, model, version, artifact, data, cols.get("confidence"))


def _save_calibration(store: BlobStore, trainer: Trainer, model: str, version: str,
                      artifact: Mapping[str, bytes], data: Any, confidence: Any) -> None:
    """The version's quality calibration, fitted on the same evaluation data, when the
    trainer scores rows: the new version is estimated from its first prediction on,
    before any label of its own (``driftloop.monitoring.estimate``)."""
    from driftloop.catalogue import FAMILIES
    from driftloop.monitoring.estimate import MIN_CALIBRATION_SAMPLES, fit, save_calibration
    from driftloop.retrain.trainers import ScoresRows

    if not isinstance(trainer, ScoresRows) or confidence is None:
        return
    quality = trainer.row_qualities(artifact, data)
    if len(quality) < MIN_CALIBRATION_SAMPLES or len(quality) != len(confidence):
        return
    family = FAMILIES.get(model)
    save_calibration(store, model, version, fit(
        confidence, quality, increasing=family.higher_is_better if family else True,
        metric=trainer.metric))
