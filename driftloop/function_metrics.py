"""Prometheus metrics every driftloop function serves on ``/metrics`` (via ``FunctionHost``).

Counted at the HTTP edge, so every function reports the same series whatever its service
does: requests by method and status, errors by the reason its JSON error body names,
latency, CloudEvents handled by type, and the decision a response states (retrain or
skip, drift or no drift). A service with its own registry (feedback-intake) is appended.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from driftloop.events import media, types

CONTENT_TYPE = CONTENT_TYPE_LATEST
MAX_PARSED_BODY = 1024 * 1024
"""Bodies larger than this are not parsed for an event type or a decision (counted as such)."""


class FunctionMetrics:
    """One process's function metrics, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "driftloop_function_requests", "Requests answered, by method and status code.",
            ["method", "code"], registry=self.registry)
        self.errors = Counter(
            "driftloop_function_errors", "Answers of 4xx/5xx, by the reason the body names.",
            ["reason"], registry=self.registry)
        self.latency = Histogram(
            "driftloop_function_request_seconds", "Time to answer a request.", ["method"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.events = Counter(
            "driftloop_function_events", "CloudEvents received, by type ('none': plain JSON).",
            ["type"], registry=self.registry)
        self.decisions = Counter(
            "driftloop_function_decisions", "Decisions the function's answers state.",
            ["decision"], registry=self.registry)
        for d in ("retrain", "no_retrain", "drift", "no_drift"):
            self.decisions.labels(d)  # zero until decided: the series exist from the start

    def observe(self, method: str, headers: Mapping[str, str], body: bytes, status: int,
                answer: bytes, seconds: float) -> None:
        """Count one answered request (never raises: metrics must not fail a request)."""
        self.requests.labels(method, str(status)).inc()
        self.latency.labels(method).observe(seconds)
        if method == "POST":
            for t in event_types(headers, body):
                self.events.labels(t).inc()
        doc = _json(answer)
        if status >= 400:
            reason = doc.get("error") if isinstance(doc, dict) else None
            self.errors.labels(reason if isinstance(reason, str) else f"http_{status}").inc()
        else:
            for d in decisions(doc):
                self.decisions.labels(d).inc()

    def exposition(self, *extra: CollectorRegistry) -> bytes:
        return b"".join(generate_latest(r) for r in (self.registry, *extra))


def _json(raw: bytes) -> Any:
    if not raw or len(raw) > MAX_PARSED_BODY:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def event_types(headers: Mapping[str, str], body: bytes) -> list[str]:
    """The ``type`` of each CloudEvent in a request: the ``ce-type`` header (binary mode) or
    the structured/batch body's (``other`` for a type driftloop does not declare); ``none``
    for plain JSON, ``unreadable`` for a bad body."""
    h = {k.lower(): v for k, v in headers.items()}
    if "ce-type" in h:
        return [_label(h["ce-type"])]
    ctype = h.get("content-type")
    if not (media.is_cloudevents_structured(ctype) or media.is_cloudevents_batch(ctype)):
        return ["none"]
    doc = _json(body)
    items = doc if isinstance(doc, list) else [doc]
    return [_label(d.get("type")) if isinstance(d, dict) else "unreadable" for d in items]


KNOWN_TYPES: frozenset[str] = frozenset({
    types.INPUT, types.PREPROCESSED, types.LABELED, types.PREDICTION, types.FEEDBACK,
    types.DRIFT_DETECTED, types.RETRAIN_REQUESTED, types.MODEL_TRAINED, types.MODEL_PROMOTED,
    types.MODEL_ROLLEDBACK, types.PING,
})
"""Event types counted under their own name; the type is the caller's word, so any other
is counted as ``other`` (one series per made-up type would grow without bound)."""


def _label(value: object) -> str:
    """A bounded label value: a known type, ``other`` for any other string type,
    ``unreadable`` when there is no usable type at all."""
    if not isinstance(value, str) or not value:
        return "unreadable"
    return value if value in KNOWN_TYPES else "other"


def decisions(doc: object) -> list[str]:
    """What an answer decided: retrain-trigger's ``decision.retrain``, drift-check's
    ``dataset_drift`` (one per checked model in a list)."""
    out: list[str] = []
    for d in doc if isinstance(doc, list) else [doc]:
        if not isinstance(d, dict):
            continue
        decision = d.get("decision")
        if isinstance(decision, dict) and isinstance(decision.get("retrain"), bool):
            out.append("retrain" if decision["retrain"] else "no_retrain")
        if isinstance(d.get("dataset_drift"), bool):
            out.append("drift" if d["dataset_drift"] else "no_drift")
    return out
