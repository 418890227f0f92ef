"""Labeled feedback from the blob store: read, de-duplicate, reconcile corrections, order and
split by time."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from driftloop.blob import BlobStore
from driftloop.labeled import latest_per_prediction
from driftloop.naming import safe_segment


@dataclass(frozen=True)
class LabeledRecord:
    key: str
    """De-duplication key: the feedback's (source, id), else the prediction id."""
    time: str
    data: Mapping[str, Any]


def _records_of(blob: bytes) -> Iterator[Mapping[str, Any]]:
    for line in blob.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            doc = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(doc, dict):
            yield doc


def to_record(doc: Mapping[str, Any]) -> LabeledRecord | None:
    """One archived line (a structured CloudEvent, or the bare labeled data) as a record."""
    data = doc.get("data") if isinstance(doc.get("data"), dict) else doc
    if not isinstance(data, dict) or data.get("truth") is None:
        return None
    if data.get("feedback_id"):
        key = json.dumps(["feedback", str(data.get("feedback_source") or ""),
                          str(data["feedback_id"])])
    elif data.get("prediction_id"):
        key = json.dumps(["prediction", str(data["prediction_id"])])
    else:
        key = json.dumps([str(doc.get("source", "")), str(doc.get("id", ""))])
    when = str(data.get("feedback_time") or doc.get("time") or data.get("prediction_time") or "")
    return LabeledRecord(key, when, data)


def read_labeled(store: BlobStore, model: str, *, until: str | None = None) -> list[LabeledRecord]:
    """One label per prediction of ``model``, oldest first.

    Copies of one feedback (same (source, id)) count once; of several feedback for one
    prediction, the latest by event time wins (``driftloop.labeled``), so a correction
    replaces the label instead of adding a second one. ``until`` (an RFC 3339 time) leaves
    out newer records, so a run's data is fixed.
    """
    from driftloop.archive import archived_keys

    prefix = f"labeled/model={safe_segment(model, field='model')}/"
    seen: dict[str, LabeledRecord] = {}
    for key in archived_keys(store, prefix):  # committed files only (Flink's in-progress
        # part files start with '.' or '_')
        for doc in _records_of(store.get(key)):
            rec = to_record(doc)
            if rec is None or rec.key in seen:
                continue
            if until is not None and rec.time and rec.time > until:
                continue
            seen[rec.key] = rec
    winners = latest_per_prediction(seen.values(), lambda r: r.data)
    return sorted(winners, key=lambda r: (r.time, r.key))


def split_by_time(
    records: list[LabeledRecord], recent_share: float
) -> tuple[list[LabeledRecord], list[LabeledRecord]]:
    """(older for training, newest ``recent_share`` for evaluation); input is time-ordered."""
    n_recent = round(len(records) * recent_share)
    if len(records) < 10:
        n_recent = 0
    cut = len(records) - n_recent
    return records[:cut], records[cut:]
