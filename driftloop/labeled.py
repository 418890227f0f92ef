"""What a labeled record is: its identity, and which label counts when a prediction has several.

Every consumer that materialises labeled data (the join, both archives, the training-data
reader, quality aggregation) uses these rules, so they cannot disagree:

- A labeled record is identified by the feedback it carries: ``(feedback_source,
  feedback_id)`` (CloudEvents ids are unique per source only). Its event ``id`` is derived
  from that pair (``labeled_id``), so two apps reusing a feedback id never collapse.
- Corrections: a prediction may receive several feedback events. Per prediction the
  feedback with the latest event ``time`` wins (ties: the greater (source, id)); truth and
  reward are reconciled separately, so a reward-only event does not erase a truth.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from driftloop.events import LABELED

T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def labeled_id(feedback_source: str, feedback_id: str) -> str:
    """The labeled event id of one feedback event: a digest of its (source, id)."""
    digest = hashlib.sha256(f"{feedback_source}\x00{feedback_id}".encode()).hexdigest()
    return f"labeled-{digest[:40]}"


def identity(source: str, id_: str, type_: str | None, data: Any) -> str:
    """The de-duplication key of an archived event: its (source, id), except a labeled
    record, whose identity is the (source, id) of the feedback it carries. JSON-encoded, so
    no separator inside a source or id can make two identities equal."""
    if type_ == LABELED and isinstance(data, Mapping):
        fs, fid = data.get("feedback_source"), data.get("feedback_id")
        if isinstance(fs, str) and isinstance(fid, str) and fid:
            return json.dumps(["feedback", fs, fid])
    return json.dumps([source, id_])


def _time(value: Any) -> datetime:
    if not isinstance(value, str) or not value:
        return _EPOCH
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return _EPOCH
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def order_key(data: Mapping[str, Any]) -> tuple[datetime, str, str]:
    """How corrections are ordered: feedback event time, then (source, id)."""
    return (_time(data.get("feedback_time")), str(data.get("feedback_source") or ""),
            str(data.get("feedback_id") or ""))


def prediction_key(data: Mapping[str, Any]) -> str | None:
    """The prediction a labeled record labels (model + prediction id), if it names one."""
    pid = data.get("prediction_id")
    if not isinstance(pid, str) or not pid:
        return None
    return f"{data.get('model')}\x1f{pid}"


def latest_per_prediction(
    items: Iterable[T], data_of: Callable[[T], Mapping[str, Any]],
    has: Callable[[Mapping[str, Any]], bool] = lambda d: d.get("truth") is not None,
) -> list[T]:
    """The winning item per prediction among those ``has`` accepts (input order kept for
    items that name no prediction)."""
    best: dict[str, T] = {}
    loose: list[T] = []
    for item in items:
        d = data_of(item)
        if not has(d):
            continue
        key = prediction_key(d)
        if key is None:
            loose.append(item)
            continue
        cur = best.get(key)
        if cur is None or order_key(d) > order_key(data_of(cur)):
            best[key] = item
    return [*best.values(), *loose]
