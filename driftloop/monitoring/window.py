"""The current window: recent records of one model from Kafka (or a file), as columns.

Kafka: every partition of a topic is read from the first record at or after the window's
start (at most ``max_records`` per partition) up to the end offsets taken at the start,
without a consumer group, so reading a window never moves anyone's offsets. The start is
fixed when the read is asked for (``since_ms``, or ``now - window_s`` at the call), never
after connecting: a slow connection must not move the window past records written just
after its start.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftloop import events as ev
from driftloop import quality
from driftloop.errors import BadRequest, DriftloopError, Unavailable
from driftloop.settings import Settings

OUTPUT_PREFIX = "output."


@dataclass(frozen=True)
class Record:
    """One decoded CloudEvent from a window, with its Kafka timestamp (ms)."""

    event: ev.Event
    timestamp_ms: int

    @property
    def data(self) -> dict[str, Any]:
        d = self.event.data
        return d if isinstance(d, dict) else {}

    @property
    def model(self) -> str | None:
        m = self.data.get("model") or self.event.extensions.get("model")
        return m if isinstance(m, str) else None


@dataclass
class TopicWindow:
    records: list[Record] = field(default_factory=list)
    undecodable: int = 0


def read_topic(
    settings: Settings,
    topic: str,
    *,
    window_s: float | None = None,
    since_ms: int | None = None,
    max_records: int,
    model: str | None = None,
    timeout_s: float = 15.0,
) -> TopicWindow:
    """Records of ``topic`` written since ``since_ms`` (Kafka timestamp, ms) or in the last
    ``window_s`` seconds (exactly one of the two), model-filtered when given."""
    if (window_s is None) == (since_ms is None):
        raise ValueError("read_topic takes exactly one of window_s and since_ms")
    if since_ms is None:
        assert window_s is not None
        since_ms = int((time.time() - window_s) * 1000)
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    from driftloop.bus import client_config

    out = TopicWindow()
    try:
        consumer = KafkaConsumer(
            **client_config(settings, "drift-window"),
            group_id=None,
            enable_auto_commit=False,
            request_timeout_ms=int(timeout_s * 1000) + 1000,
            reconnect_backoff_max_ms=2_000,
        )
    except KafkaError as e:
        raise Unavailable(f"Kafka at {settings.kafka_bootstrap} unavailable: {e}") from e
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            return out
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        end = consumer.end_offsets(tps)
        begin = consumer.beginning_offsets(tps)
        by_time = consumer.offsets_for_times(dict.fromkeys(tps, max(since_ms, 0)))
        todo = {}
        for tp in tps:
            hit = by_time.get(tp)
            start = hit.offset if hit is not None else end[tp]
            start = max(start, begin[tp], end[tp] - max_records)
            if start < end[tp]:
                consumer.seek(tp, start)
                todo[tp] = end[tp]
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            for tp, msgs in consumer.poll(timeout_ms=500, max_records=2000).items():
                for m in msgs:
                    if m.offset >= todo.get(tp, -1):
                        continue
                    _add(out, m.value, m.headers, m.key, m.timestamp, model)
            for tp in list(todo):
                if consumer.position(tp) >= todo[tp]:
                    del todo[tp]
        if todo:
            raise Unavailable(f"timed out reading the window of {topic}")
    except KafkaError as e:
        raise Unavailable(f"Kafka read of {topic} failed: {e}") from e
    finally:
        consumer.close()
    out.records.sort(key=lambda r: r.timestamp_ms)
    if len(out.records) > max_records:
        out.records = out.records[-max_records:]
    return out


def _add(
    out: TopicWindow,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] | None,
    key: bytes | None,
    ts: int,
    model: str | None,
) -> None:
    try:
        event = ev.from_kafka(value, headers, key)
    except DriftloopError:
        out.undecodable += 1
        return
    rec = Record(event, int(ts))
    if model is None or rec.model == model:
        out.records.append(rec)


def _value(v: Any) -> float | str | None:
    if v is None:
        return math.nan
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        return v
    return None


def feature_rows(preprocessed: Iterable[Record]) -> list[dict[str, Any]]:
    """Input features of preprocessed records (``data.features``)."""
    rows = []
    for r in preprocessed:
        feats = r.data.get("features")
        if isinstance(feats, Mapping):
            rows.append({k: val for k, v in feats.items() if (val := _value(v)) is not None})
    return rows


def output_rows(predictions: Iterable[Record], version: str | None = None) -> list[dict[str, Any]]:
    """Scalar outputs of prediction records as ``output.<key>`` features (one version's),
    plus the family's declared output features derived from its lists
    (``quality.prediction_features``: a detector's ``top_label``, ``n_boxes``, ...).
    Shadow answers (``shadow: true``) are left out."""
    rows = []
    for r in predictions:
        if version is not None and r.data.get("version") not in (None, version):
            continue
        if r.data.get("shadow") is True:
            continue  # a mirrored answer nobody saw is not what the model served
        output = r.data.get("output")
        if isinstance(output, Mapping):
            row = {
                f"{OUTPUT_PREFIX}{k}": val
                for k, v in output.items()
                if (val := _value(v)) is not None
            }
            for k, v in _derived(r.model, output).items():
                row.setdefault(f"{OUTPUT_PREFIX}{k}", v)
            rows.append(row)
    return rows


def _derived(model: str | None, output: Mapping[str, Any]) -> dict[str, float | str]:
    """The declared output features of ``model`` from one output; none for an unknown
    model or an output another producer shaped differently (never a failed window)."""
    if model not in quality.MODELS:
        return {}
    try:
        return quality.prediction_features(model, output)
    except (TypeError, ValueError, IndexError, KeyError):
        return {}


def columns(rows: Iterable[Mapping[str, Any]], wanted: Iterable[str]) -> dict[str, np.ndarray]:
    """Columns for the ``wanted`` features; a feature no row carries is left out.

    Prediction outputs match ``output.<key>`` or, when no input feature has that name,
    the bare ``<key>`` (profiles built from a trainer's outputs name them so).
    """
    cols: dict[str, list[Any]] = {name: [] for name in wanted}
    for row in rows:
        for name, values in cols.items():
            if name in row:
                values.append(row[name])
            elif OUTPUT_PREFIX + name in row:  # a profile may name outputs bare ("label")
                values.append(row[OUTPUT_PREFIX + name])
    out: dict[str, np.ndarray] = {}
    for name, values in cols.items():
        if not values:
            continue
        if all(isinstance(v, float) for v in values):
            out[name] = np.asarray(values, dtype=np.float64)
        else:  # categorical; a missing value (NaN from null) stays None, never "nan"
            out[name] = np.asarray(
                [None if isinstance(v, float) and math.isnan(v) else str(v) for v in values],
                dtype=object,
            )
    return out


def read_frame(data: bytes, name: str) -> dict[str, np.ndarray]:
    """A CSV, Parquet or JSON-lines file as columns (by file extension)."""
    import pandas as pd

    lower = name.lower()
    try:
        if lower.endswith(".parquet") or lower.endswith(".pq"):
            frame = pd.read_parquet(io.BytesIO(data))
        elif lower.endswith(".csv"):
            frame = pd.read_csv(io.BytesIO(data))
        elif lower.endswith(".jsonl") or lower.endswith(".json"):
            frame = pd.read_json(io.BytesIO(data), lines=lower.endswith(".jsonl"))
        else:
            raise BadRequest(f"{name}: unknown window format (use .csv, .parquet or .jsonl)")
    except (ValueError, OSError) as e:
        raise BadRequest(f"{name}: unreadable window file ({e})") from e
    return {str(c): frame[c].to_numpy() for c in frame.columns}
