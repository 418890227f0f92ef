"""retrain-trigger's input, checked before any decision (pure): a manual retrain request,
an Alertmanager webhook's firing alerts, a labeled record's usable label, and the model
an event names. Every broken rule is refused at once (400 naming field and rule).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from driftloop import events as ev
from driftloop import labeled
from driftloop.errors import BadRequest, FieldError, ValidationFailed
from driftloop.naming import SAFE_NAME_RULE, is_safe_segment

MANUAL_FIELDS = frozenset({"model", "params"})


def model_of(data: Any, event: ev.Event | None = None) -> str:
    model = data.get("model") if isinstance(data, Mapping) else None
    if model is None and event is not None:
        model = event.extensions.get("model")
    if not is_safe_segment(model):
        raise BadRequest(
            f"model: a valid model name is required (got {model!r})",
            fields=[FieldError("model", "safe-name", "a valid model name")],
        )
    return str(model)


def manual_request(doc: Mapping[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """``{"model": M, "params": {...}}``; any other field is refused (it is not a counter)."""
    errors = [
        FieldError(
            str(k)[:64],
            "unknown-field",
            f"a manual retrain request takes only {', '.join(sorted(MANUAL_FIELDS))}",
        )
        for k in doc
        if k not in MANUAL_FIELDS
    ]
    params = doc.get("params")
    if params is not None and not isinstance(params, dict):
        errors.append(FieldError("params", "object", "params must be a JSON object"))
    if not is_safe_segment(doc.get("model")):
        errors.append(
            FieldError("model", "safe-name", f"a valid model name is required: {SAFE_NAME_RULE}")
        )
    if errors:
        raise ValidationFailed(errors)
    return str(doc["model"]), params


def usable_label(event: ev.Event) -> tuple[str, str] | str:
    """(model, label identity) of a labeled record that can train, else why it cannot.

    Usable: matched to a prediction, carries a truth (not only a reward), names a valid
    model. The identity is the feedback's own (source, id), so repeated deliveries of one
    feedback count once and equal ids from different sources count apart.
    """
    data = event.data if isinstance(event.data, Mapping) else None
    if data is None:
        raise BadRequest(
            "data: a labeled record must carry a JSON object",
            fields=[FieldError("data", "object", "must be a JSON object")],
        )
    model = data.get("model")
    if not is_safe_segment(model):
        raise BadRequest(
            f"data.model: a valid model name is required (got {model!r})",
            fields=[FieldError("data.model", "safe-name", SAFE_NAME_RULE)],
        )
    if not data.get("prediction_id"):
        return "not matched to a prediction"
    if data.get("truth") is None:
        return "no truth (reward-only feedback)"
    fb_source, fb_id = data.get("feedback_source"), data.get("feedback_id")
    if not (isinstance(fb_source, str) and isinstance(fb_id, str) and fb_source and fb_id):
        return "no feedback (source, id)"
    return str(model), labeled.identity(event.source, event.id, ev.LABELED, data)


def parse_alerts(doc: Mapping[str, Any]) -> tuple[list[tuple[str, str, str]], list[dict[str, Any]]]:
    """Firing alerts as (model, trigger, de-duplication key), and the ignored ones.

    Every structural error of the webhook is collected and refused at once (400).
    """
    alerts = doc.get("alerts")
    if not isinstance(alerts, list):
        raise ValidationFailed([FieldError("alerts", "array", "alerts must be a JSON array")])
    errors: list[FieldError] = []
    firing: list[tuple[str, str, str]] = []
    ignored: list[dict[str, Any]] = []
    for i, a in enumerate(alerts):
        where = f"alerts[{i}]"
        if not isinstance(a, Mapping):
            errors.append(FieldError(where, "object", "an alert must be a JSON object"))
            continue
        status = a.get("status", "firing")
        if status not in ("firing", "resolved"):
            errors.append(
                FieldError(f"{where}.status", "enum", "status must be 'firing' or 'resolved'")
            )
        labels = a.get("labels", {})
        if not isinstance(labels, Mapping):
            errors.append(
                FieldError(f"{where}.labels", "object", "labels must be an object of string values")
            )
            continue
        for k, v in labels.items():
            if not isinstance(v, str):
                errors.append(
                    FieldError(
                        f"{where}.labels.{str(k)[:64]}", "string", "label values must be strings"
                    )
                )
        for name in ("fingerprint", "startsAt"):
            if name in a and not isinstance(a[name], str):
                errors.append(FieldError(f"{where}.{name}", "string", f"{name} must be a string"))
        if status != "firing":
            continue
        model = labels.get("model")
        if model is None:
            ignored.append(
                {
                    "alert": i,
                    "alertname": str(labels.get("alertname", ""))[:200],
                    "reason": "no model label",
                }
            )
            continue
        if not is_safe_segment(model):
            errors.append(FieldError(f"{where}.labels.model", "safe-name", SAFE_NAME_RULE))
            continue
        trigger = labels.get("trigger") or labels.get("alertname") or ""
        firing.append(
            (
                str(model),
                str(trigger),
                f"alert\x1f{a.get('fingerprint', '')}\x1f{a.get('startsAt', '')}",
            )
        )
    if errors:
        raise ValidationFailed(errors)
    return firing, ignored


__all__ = ["MANUAL_FIELDS", "manual_request", "model_of", "parse_alerts", "usable_label"]
