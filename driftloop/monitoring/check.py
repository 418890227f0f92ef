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
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from driftloop import events as ev
from driftloop import topics
from driftloop.blob import BlobStore, open_store
from driftloop.drift import (
    DriftConfig,
    DriftInputError,
    DriftResult,
    NumericProfile,
    ReferenceProfile,
    detect,
)
from driftloop.errors import BadRequest, DriftloopError, FieldError, NotFound, ValidationFailed
from driftloop.events import LABELED, PREPROCESSED
from driftloop.function_service import FunctionService, Routes, combine
from driftloop.http import Response
from driftloop.monitoring import metrics
from driftloop.monitoring.check_input import (
    EmptyWindow,
    Window,
    check_fields,
    column,
    column_confidences,
    input_error,
    numbers_or_nan,
    ping_models,
    row_count,
    split_missing,
)
from driftloop.monitoring.estimate import (
    MIN_CALIBRATION_SAMPLES,
    Calibration,
    CalibrationError,
    Estimate,
    confidence_of,
    estimate,
    fit,
    labeled_pairs,
    load_calibration,
    save_calibration,
)
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
from driftloop.publisher import EventPublisher
from driftloop.quality import MODELS
from driftloop.registry import Registry
from driftloop.settings import Settings

log = logging.getLogger("driftloop.drift_check")

SOURCE = "driftloop/drift-check"
WINDOW_TRIGGERS = frozenset({ev.PREDICTION, LABELED, PREPROCESSED})
ROUTES = Routes(name="drift-check", post="POST a CloudEvent or a check request")

WindowReader = Callable[[str, str | None, str | None], Window]


class DriftCheckService(FunctionService):
    """Everything behind the drift-check function; one instance per process."""

    routes = ROUTES

    def __init__(
        self,
        settings: Settings,
        *,
        store: BlobStore | None = None,
        publisher: EventPublisher | None = None,
    ) -> None:
        self.settings = settings
        self.store = store or open_store(settings.resolved_blob_url, settings)
        self.registry = Registry(self.store)
        self.publisher = publisher or EventPublisher(settings)
        self._lock = threading.Lock()
        self._filled: dict[str, int] = {}

    def close(self) -> None:
        self.publisher.close()

    # ------------------------------------------------------------ the edge's hooks

    def on_events(self, events: list[ev.Event]) -> Response:
        return combine([self.on_event(e) for e in events])

    def on_json(self, doc: dict[str, Any]) -> Response:
        return Response.json(200, self.check_request(doc))

    def on_event(self, event: ev.Event) -> tuple[int, dict[str, Any]]:
        """One CloudEvent → (status, body)."""
        if event.type == ev.PING:
            models = ping_models(event.data, self.settings.drift_check_max_models)
            return 200, {"trigger": "schedule", "results": self.check_all(models)}
        data = event.data if isinstance(event.data, dict) else {}
        if event.type == ev.MODEL_PROMOTED:
            return 200, self._check_or_skip(self._model(data.get("model")), data.get("version"))
        if event.type in WINDOW_TRIGGERS:
            model = self._model(data.get("model") or event.extensions.get("model"))
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
        errors = check_fields(request)
        if errors:
            raise ValidationFailed(errors)
        model = self._model(request.get("model"))
        version = request.get("version")
        window = request.get("window")
        if window is not None:
            cols = {k: column(v) for k, v in window.items()}
            return self.check(model, version, Window(cols, [], {"inline": row_count(cols)}))
        key = request.get("window_key")
        if key is not None:
            try:
                cols = read_frame(self.store.get(key), key)
            except KeyError as e:
                raise NotFound(f"window object {key!r} not found in the blob store") from e
            return self.check(model, version, Window(cols, [], {"blob": row_count(cols)}))
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

        def read(topic: str) -> TopicWindow:
            return read_topic(
                s,
                topic,
                window_s=s.drift_window_s,
                max_records=s.drift_window_max_records,
                model=model,
            )

        pre = TopicWindow()
        for m in modalities:
            pre.records.extend(read(topics.preprocessed(m)).records)
        preds = read(topics.PREDICTIONS)
        labeled = read(topics.LABELED)
        rows = feature_rows(pre.records) + output_rows(preds.records, version)
        confidences: dict[str, list[float]] = {}
        for r in preds.records:
            v, c = r.data.get("version"), confidence_of(r.data.get("output"))
            if v is not None and c is not None and r.data.get("shadow") is not True:
                confidences.setdefault(str(v), []).append(c)
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
            confidences=confidences,
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
        )
        try:
            result = detect(sub, present, config)
        except DriftInputError as e:
            raise input_error(e) from e
        quality = aggregate(window.labeled, model=model)
        estimated = self.estimates(model, version, window)
        now = time.time()
        registry = metrics.check_registry(
            model,
            version,
            result,
            quality,
            now=now,
            missing_values={k: missing_values.get(k, 0) for k in wanted},
            estimated=estimated,
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
            "quality_estimated": [e.to_dict() for e in estimated],
            "pushed": True,
            "event": {"id": event.id, "type": event.type} if event is not None else None,
        }

    def estimates(
        self, model: str, version: str, window: Window, *, fit_missing: bool = True
    ) -> list[Estimate]:
        """Estimated quality of every version with predictions in the window (an inline
        window's ``confidence`` column is the checked version's), each through its own
        calibration; a version without one gets none (never another version's).
        ``fit_missing`` False: only stored calibrations (a report writes nothing)."""
        spec = MODELS.get(model)
        metric = spec.metric if spec else "accuracy"
        confidences = dict(window.confidences)
        if not confidences and (inline := column_confidences(window.columns)):
            confidences[version] = inline
        out = []
        for v, conf in sorted(confidences.items()):
            if not is_safe_segment(v):
                continue
            cal = self.calibration(model, v, metric, window if fit_missing else None)
            e = estimate(cal, conf, model=model, version=v) if cal is not None else None
            if e is not None:
                out.append(e)
        return out

    def calibration(
        self, model: str, version: str, metric: str, window: Window | None
    ) -> Calibration | None:
        """The version's stored calibration; else one fitted on the labeled records of the
        window (its first labeled window of ``MIN_CALIBRATION_SAMPLES`` pairs is its
        reference) and stored, the first stored winning across replicas."""
        try:
            cal = load_calibration(self.store, model, version)
        except CalibrationError as e:
            log.warning("%s v%s: calibration unreadable, no estimate: %s", model, version, e)
            return None
        if cal is not None:
            return cal if cal.metric == metric else None
        if window is None:
            return None
        conf, qual = labeled_pairs(window.labeled, model=model, version=version, metric=metric)
        if len(conf) < MIN_CALIBRATION_SAMPLES:
            return None
        spec = MODELS.get(model)
        cal = fit(conf, qual, increasing=spec.higher_is_better if spec else True, metric=metric)
        if not save_calibration(self.store, model, version, cal):
            return self.calibration(model, version, metric, None)
        log.info(
            "%s v%s: quality calibration fitted on %d labeled predictions",
            model,
            version,
            len(conf),
        )
        return cal

    def _emit(self, model: str, version: str, result: DriftResult, window: Window) -> ev.Event:
        data = drift_event_data(model, version, result, window.counts)
        return self.publisher.publish(
            ev.new_event(ev.DRIFT_DETECTED, SOURCE, data, datacontenttype=ev.JSON, model=model),
            key=model,
        )


def drift_event_data(
    model: str, version: str, result: DriftResult, counts: Mapping[str, int]
) -> ev.DriftDetectedData:
    """Payload of ``io.driftloop.drift.detected.v1``: the verdict, the drifted features and
    what was checked."""
    return ev.DriftDetectedData(
        model=model,
        version=version,
        share_drifted=result.share_drifted,
        dataset_drift=bool(result.dataset_drift),
        drift_share=result.meta["drift_share"],
        features={
            name: {"statistic": f.statistic, "value": f.value, "threshold": f.threshold}
            for name, f in result.features.items()
            if f.drifted
        },
        window={"rows": result.meta["current"]["rows"], "records": dict(counts)},
    )


__all__ = [
    "DriftCheckService",
    "EmptyWindow",
    "QualityStat",
    "ReferenceProfile",
    "Window",
    "drift_event_data",
    "input_error",
    "numbers_or_nan",
    "ping_models",
    "split_missing",
]
