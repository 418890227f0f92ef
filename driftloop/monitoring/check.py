"""drift-check: one model's current window against its reference profile, plus quality.

Triggers (all over HTTP, as the function receives them):

* ``dev.knative.sources.ping`` - a scheduled tick: checks every model with a profile
  (or ``data.models``); 200 with one result per model.
* ``io.driftloop.model.promoted.v1`` - checks the promoted model/version (a window still
  too thin for the new version is reported as skipped, 200).
* records from the KafkaSource (``prediction``, ``labeled``, ``preprocessed``) - counted
  per model; every ``drift_check_every_records`` of them fill a window and run a check
  (202 while filling).
* a plain JSON request ``{"model", "version"?, "window"?, "window_key"?}`` for ad hoc checks
  (``window``: columns inline; ``window_key``: a CSV/Parquet/JSONL object in the blob store).

A check pushes drift and quality gauges to the Pushgateway and, when the dataset drifts,
publishes ``io.driftloop.drift.detected.v1`` to ``driftloop.events``. Bad input gets a
4xx naming the field and the rule (every field error at once): unknown model or missing
profile (404); empty or too small window, unsafe model/version/window_key, ping data that
is not an object or a ``models`` list that is not a bounded list of names (400).

A missing value (null or NaN; in a window read from Kafka also ±inf) is counted per
feature (``missing_values`` in the answer, ``driftloop_drift_missing_values`` on the
Pushgateway) and left out: one record with a null output never fails the whole check.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from driftloop import events as ev
from driftloop import topics
from driftloop.blob import BlobStore, check_key, open_store
from driftloop.drift import (
    DriftConfig,
    DriftInputError,
    NumericProfile,
    ReferenceProfile,
    detect,
)
from driftloop.errors import BadRequest, DriftloopError, FieldError, NotFound, ValidationFailed
from driftloop.events import LABELED, PREPROCESSED
from driftloop.http import Response, error_response
from driftloop.monitoring import metrics
from driftloop.monitoring.profiles import load_profile
from driftloop.monitoring.quality import QualityStat, aggregate
from driftloop.monitoring.window import (
    TopicWindow,
    columns,
    feature_rows,
    output_rows,
    read_frame,
    read_topic,
)
from driftloop.naming import SAFE_NAME_RULE, is_safe_segment, safe_segment
from driftloop.quality import MODELS
from driftloop.registry import Registry
from driftloop.settings import Settings

log = logging.getLogger("driftloop.drift_check")

SOURCE = "driftloop/drift-check"
WINDOW_FILE_SUFFIXES = (".csv", ".parquet", ".pq", ".jsonl", ".json")
MAX_WINDOW_KEY_LENGTH = 1024
WINDOW_TRIGGERS = frozenset({ev.PREDICTION, LABELED, PREPROCESSED})


class EmptyWindow(BadRequest):
    reason = "empty_window"


def _input_error(e: DriftInputError) -> BadRequest:
    field_name = f"window.{e.feature}" if e.feature else "window"
    return BadRequest(str(e), fields=[FieldError(field_name, e.rule, str(e))])


@dataclass(frozen=True)
class Window:
    """What one check judged: feature columns and the labeled records for quality."""

    columns: Mapping[str, np.ndarray]
    labeled: list[dict[str, Any]]
    counts: Mapping[str, int]
    labeled_ts_ms: list[int] = field(default_factory=list)
    from_stream: bool = False
    """Read from Kafka (records of others): non-finite values count as missing, never a 400."""


def split_missing(values: np.ndarray, *, infinite_missing: bool) -> tuple[np.ndarray, int]:
    """A column without its missing values (None, NaN; ±inf too when ``infinite_missing``),
    and how many there were (pure)."""
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        gone = ~np.isfinite(arr) if infinite_missing else np.isnan(arr)
    elif arr.dtype.kind in "iub":
        return arr, 0
    else:
        gone = np.fromiter(
            (
                v is None
                or (isinstance(v, float) and (v != v or (infinite_missing and abs(v) == np.inf)))
                for v in arr.ravel()
            ),
            dtype=bool,
            count=arr.size,
        )
    n = int(gone.sum())
    return (arr[~gone] if n else arr), n


def numbers_or_nan(values: np.ndarray) -> np.ndarray:
    """A column as floats; what is not a number (text, booleans, None) becomes NaN (pure)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "fiu":
        return arr.astype(np.float64)
    out = np.full(arr.size, np.nan)
    for i, v in enumerate(arr.ravel()):
        if isinstance(v, bool | np.bool_) or v is None:
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def ping_models(data: Any, max_models: int) -> list[str] | None:
    """The models a ping asks for (None: every model with a profile); data must be an
    object and ``models`` a list of at most ``max_models`` safe names, duplicates dropped."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise BadRequest(
            "ping data must be a JSON object",
            fields=[FieldError("data", "object", "must be a JSON object (or absent)")],
        )
    models = data.get("models")
    if models is None:
        return None
    if not isinstance(models, list):
        raise BadRequest(
            "data.models must be a list of model names",
            fields=[FieldError("data.models", "array", "must be a JSON array of names")],
        )
    if len(models) > max_models:
        raise BadRequest(
            f"data.models lists {len(models)} models; at most {max_models} "
            "(DRIFTLOOP_DRIFT_CHECK_MAX_MODELS)",
            fields=[FieldError("data.models", "max-items", f"at most {max_models} names")],
        )
    errors = [
        FieldError(f"data.models[{i}]", "safe-name", f"{m!r:.80} {SAFE_NAME_RULE}")
        for i, m in enumerate(models)
        if not is_safe_segment(m)
    ]
    if errors:
        raise ValidationFailed(errors)
    return list(dict.fromkeys(models))


def _check_fields(request: Mapping[str, Any]) -> list[FieldError]:
    """Every field error of an ad hoc check request (pure)."""
    errors: list[FieldError] = []
    model = request.get("model")
    if not isinstance(model, str) or not model:
        errors.append(FieldError("model", "required", "a model name is required"))
    elif not is_safe_segment(model):
        errors.append(FieldError("model", "safe-name", f"{model!r:.80} {SAFE_NAME_RULE}"))
    version = request.get("version")
    if version is not None and not is_safe_segment(version):
        errors.append(FieldError("version", "safe-name", f"{version!r:.80} {SAFE_NAME_RULE}"))
    window, key = request.get("window"), request.get("window_key")
    if window is not None and key is not None:
        errors.append(FieldError("window_key", "one-of", "give window or window_key, not both"))
    if window is not None and (
        not isinstance(window, dict) or not all(isinstance(v, list) for v in window.values())
    ):
        errors.append(FieldError("window", "columns", "object of arrays"))
    if key is not None:
        errors.extend(_window_key_errors(key))
    return errors


def _window_key_errors(key: Any) -> list[FieldError]:
    if not isinstance(key, str):
        return [FieldError("window_key", "string", "must be a blob key string")]
    if len(key) > MAX_WINDOW_KEY_LENGTH:
        return [FieldError("window_key", "max-length", f"at most {MAX_WINDOW_KEY_LENGTH} chars")]
    try:
        check_key(key)
    except ValueError as e:
        return [FieldError("window_key", "relative-key", str(e)[:300])]
    if any(ord(c) < 0x20 or c == "\x7f" for c in key):
        return [FieldError("window_key", "relative-key", "must not hold control characters")]
    if not key.lower().endswith(WINDOW_FILE_SUFFIXES):
        return [
            FieldError(
                "window_key", "format", f"must end with one of {', '.join(WINDOW_FILE_SUFFIXES)}"
            )
        ]
    return []


WindowReader = Callable[[str, str | None, str | None], Window]


class DriftCheckService:
    """Everything behind the drift-check function; one instance per process."""

    def __init__(self, settings: Settings, *, store: BlobStore | None = None) -> None:
        self.settings = settings
        self.store = store or open_store(settings.resolved_blob_url, settings)
        self.registry = Registry(self.store)
        self._producer: Any = None
        self._lock = threading.Lock()
        self._filled: dict[str, int] = {}

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None

    # ------------------------------------------------------------ HTTP entry

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        try:
            if method == "GET" and path.rstrip("/") in ("/healthz", "/readyz"):
                return Response.json(200, {"status": "ok"})
            if method != "POST":
                return Response.json(
                    405,
                    {
                        "error": "method_not_allowed",
                        "message": "POST a CloudEvent or a check request",
                    },
                )
            lower = {k.lower(): v for k, v in headers.items()}
            ctype = lower.get("content-type", "").split(";", 1)[0].strip().lower()
            if "ce-specversion" in lower or ctype in (ev.STRUCTURED, ev.BATCH):
                results = [self.on_event(e) for e in ev.from_http(
                    headers, body, max_depth=self.settings.max_json_depth)]
                status = max(r[0] for r in results)
                bodies = [r[1] for r in results]
                return Response.json(status, bodies[0] if len(bodies) == 1 else bodies)
            request = ev.load_json(body or b"{}", max_depth=self.settings.max_json_depth)
            if not isinstance(request, dict):
                raise BadRequest(
                    "body must be a JSON object",
                    fields=[FieldError("body", "object", "must be a JSON object")],
                )
            return Response.json(200, self.check_request(request))
        except DriftloopError as e:
            return error_response(e)

    def on_event(self, event: ev.Event) -> tuple[int, dict[str, Any]]:
        """One CloudEvent → (status, body)."""
        if event.type == ev.PING:
            models = ping_models(event.data, self.settings.drift_check_max_models)
            return 200, {"trigger": "schedule", "results": self.check_all(models)}
        data = event.data if isinstance(event.data, dict) else {}
        if event.type == ev.MODEL_PROMOTED:
            return 200, self._check_or_skip(self._model(data.get("model")), data.get("version"))
        if event.type in WINDOW_TRIGGERS:
            model = data.get("model") or event.extensions.get("model")
            model = self._model(model)
            with self._lock:
                n = self._filled.get(model, 0) + 1
                full = n >= self.settings.drift_check_every_records
                self._filled[model] = 0 if full else n
            if not full:
                return 202, {
                    "model": model,
                    "filling": n,
                    "window_records": self.settings.drift_check_every_records,
                }
            return 200, self._check_or_skip(model, None)
        raise BadRequest(
            f"event type {event.type!r} does not trigger drift-check",
            fields=[FieldError("type", "supported", "unsupported event type")],
        )

    def _check_or_skip(self, model: str, version: Any) -> dict[str, Any]:
        """Check for an event that is itself fine: a model without a profile, a window still
        too thin (a just-promoted version) or one the check cannot judge is reported in a
        200, never blamed on the event (which would be dead-lettered). The event's own
        fields (model, version) are still a 400."""
        if version is not None and not is_safe_segment(version):
            raise BadRequest(
                f"version {version!r:.80} {SAFE_NAME_RULE}",
                fields=[FieldError("version", "safe-name", SAFE_NAME_RULE)],
            )
        try:
            return self.check(model, version)
        except (NotFound, BadRequest) as e:
            log.warning("%s: check skipped: %s", model, e)
            return {"model": model, "skipped": e.to_dict()}

    def check_request(self, request: Mapping[str, Any]) -> dict[str, Any]:
        errors = _check_fields(request)
        if errors:
            raise ValidationFailed(errors)
        model = self._model(request.get("model"))
        version = request.get("version")
        window = request.get("window")
        if window is not None:
            cols = {k: _column(v) for k, v in window.items()}
            return self.check(model, version, Window(cols, [], {"inline": _rows(cols)}))
        key = request.get("window_key")
        if key is not None:
            try:
                cols = read_frame(self.store.get(key), key)
            except KeyError as e:
                raise NotFound(f"window object {key!r} not found in the blob store") from e
            return self.check(model, version, Window(cols, [], {"blob": _rows(cols)}))
        return self.check(model, version)

    # ------------------------------------------------------------ checks

    def _model(self, model: Any) -> str:
        if not isinstance(model, str) or not model:
            raise BadRequest(
                "model is required",
                fields=[FieldError("model", "required", "a model name is required")],
            )
        try:
            return safe_segment(model, field="model")
        except ValueError as e:
            raise BadRequest(str(e), fields=[FieldError("model", "safe-name", str(e))]) from e

    def resolve_version(self, model: str, version: Any) -> str:
        if version is not None:
            if not is_safe_segment(version):
                raise BadRequest(
                    f"version {version!r:.80} {SAFE_NAME_RULE}",
                    fields=[FieldError("version", "safe-name", SAFE_NAME_RULE)],
                )
            return self.registry.resolve(model, version)
        versions = self.registry.versions(model)
        if not versions:
            raise NotFound(f"unknown model {model!r}: it has no registered version")
        return self.registry.alias(model, "champion") or versions[-1]

    def check_all(self, models: list[str] | None = None) -> list[dict[str, Any]]:
        names = models if models is not None else self.registry.models()
        out = []
        for m in names:
            try:
                out.append({"status": 200, **self.check(self._model(m), None)})
            except DriftloopError as e:
                out.append({"status": e.status, "model": m, **e.to_dict()})
        return out

    def read_window(self, model: str, version: str, wanted: list[str]) -> Window:
        s = self.settings
        spec = MODELS.get(model)
        modalities = [spec.modality] if spec and spec.modality else list(topics.MODALITIES)
        kw = {
            "window_s": s.drift_window_s,
            "max_records": s.drift_window_max_records,
            "model": model,
        }
        pre = TopicWindow()
        for m in modalities:
            w = read_topic(s, topics.preprocessed(m), **kw)
            pre.records.extend(w.records)
        preds = read_topic(s, topics.PREDICTIONS, **kw)
        labeled = read_topic(s, topics.LABELED, **kw)
        rows = feature_rows(pre.records) + output_rows(preds.records, version)
        return Window(
            columns(rows, wanted),
            [r.data for r in labeled.records],
            {
                "preprocessed": len(pre.records),
                "predictions": len(preds.records),
                "labeled": len(labeled.records),
            },
            [r.timestamp_ms for r in labeled.records],
            from_stream=True,
        )

    def check(self, model: str, version: Any, window: Window | None = None) -> dict[str, Any]:
        """Run one check and publish its results; returns the response body."""
        version = self.resolve_version(model, version)
        profile = load_profile(self.store, model, version)
        wanted = list(profile.features)
        window = window or self.read_window(model, version, wanted)
        missing_values: dict[str, int] = {}
        present: dict[str, np.ndarray] = {}
        for k, v in window.columns.items():
            if k not in profile.features:
                continue
            if window.from_stream and isinstance(profile.features[k], NumericProfile):
                v = numbers_or_nan(v)  # another producer's "n/a" is a missing value
            kept, n = split_missing(v, infinite_missing=window.from_stream)
            missing_values[k] = n
            if len(kept):
                present[k] = kept
        missing = [k for k in wanted if k not in present]
        if any(missing_values.values()):
            log.warning(
                "%s v%s: missing values left out of the check: %s",
                model,
                version,
                {k: n for k, n in missing_values.items() if n},
            )
        rows = max((len(v) for v in present.values()), default=0)
        if rows == 0:
            raise EmptyWindow(
                f"the current window of {model!r} holds no values of its features {wanted}",
                fields=[FieldError("window", "non-empty", "no feature values in the window")],
            )
        if rows < self.settings.drift_min_records:
            raise EmptyWindow(
                f"the current window of {model!r} has {rows} rows; at least "
                f"{self.settings.drift_min_records} are needed (DRIFTLOOP_DRIFT_MIN_RECORDS)",
                fields=[FieldError("window", "min-records", f"{rows} rows")],
            )
        sub = replace(profile, features={k: profile.features[k] for k in present})
        config = DriftConfig(
            drift_share=self.settings.drift_share, nan_policy=self.settings.drift_nan_policy
        )  # type: ignore[arg-type]
        try:
            result = detect(sub, present, config)
        except DriftInputError as e:
            raise _input_error(e) from e
        quality = aggregate(window.labeled, model=model)
        now = time.time()
        registry = metrics.check_registry(
            model, version, result, quality, now=now,
            missing_values={k: missing_values.get(k, 0) for k in wanted},
        )
        metrics.push(self.settings.resolved_pushgateway_url, model, registry)
        event = self._emit(model, version, result, window) if result.dataset_drift else None
        return {
            "model": model,
            "version": version,
            "checked_at": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
            "window": {"rows": rows, "records": dict(window.counts)},
            "missing_features": missing,
            "missing_values": {k: n for k, n in missing_values.items() if n},
            "verdict": result.verdict(),
            "drift": result.to_dict(),
            "quality": [q.to_dict() for q in quality],
            "pushed": True,
            "event": {"id": event.id, "type": event.type} if event is not None else None,
        }

    def _emit(self, model: str, version: str, result: Any, window: Window) -> ev.Event:
        from driftloop.bus import make_producer, publish

        data = drift_event_data(model, version, result, window.counts)
        event = ev.new_event(ev.DRIFT_DETECTED, SOURCE, data, datacontenttype=ev.JSON, model=model)
        with self._lock:
            if self._producer is None:
                self._producer = make_producer(self.settings)
            producer = self._producer
        publish(producer, topics.EVENTS, [event], key=model)
        return event


def drift_event_data(
    model: str, version: str, result: Any, counts: Mapping[str, int]
) -> dict[str, Any]:
    """Payload of ``io.driftloop.drift.detected.v1`` (validates as ``DriftDetectedData``)."""
    return {
        "model": model,
        "version": version,
        "share_drifted": result.share_drifted,
        "dataset_drift": result.dataset_drift,
        "drift_share": result.meta["drift_share"],
        "features": {
            name: {"statistic": f.statistic, "value": f.value, "threshold": f.threshold}
            for name, f in result.features.items()
            if f.drifted
        },
        "window": {"rows": result.meta["current"]["rows"], "records": dict(counts)},
    }


def _column(values: list[Any]) -> np.ndarray:
    if all((isinstance(v, int | float) and not isinstance(v, bool)) or v is None for v in values):
        return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    return np.asarray([str(v) for v in values], dtype=object)


def _rows(cols: Mapping[str, np.ndarray]) -> int:
    return max((len(v) for v in cols.values()), default=0)


__all__ = [
    "DriftCheckService",
    "EmptyWindow",
    "QualityStat",
    "ReferenceProfile",
    "Response",
    "drift_event_data",
    "ping_models",
    "split_missing",
]
