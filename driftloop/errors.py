"""Exceptions that carry their HTTP status; handlers map them to responses in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_FIELDS = 20
"""Most field errors one answer lists (the rest are counted): an answer stays small
whatever the request holds."""
MAX_TEXT = 240
"""Longest field name or message in an answer (they may quote what the client sent)."""


def clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class FieldError:
    """One broken rule on one field of a request or event."""

    field: str
    rule: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"field": clip(self.field, 120), "rule": clip(self.rule, 80),
                "message": clip(self.message)}


class DriftloopError(Exception):
    """Base error: ``status`` is what an HTTP handler answers with."""

    status: int = 500
    reason: str = "internal"

    def __init__(self, message: str, *, fields: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields: list[FieldError] = list(fields or [])

    def to_dict(self) -> dict[str, Any]:
        """The JSON answer body, bounded: at most ``MAX_FIELDS`` fields, clipped texts."""
        body: dict[str, Any] = {"error": self.reason, "message": clip(self.message, 1000)}
        if self.fields:
            shown = [f.to_dict() for f in self.fields[:MAX_FIELDS]]
            if len(self.fields) > MAX_FIELDS:
                shown.append({"field": "fields", "rule": "max-errors",
                              "message": f"{len(self.fields) - MAX_FIELDS} more errors not listed"})
            body["fields"] = shown
        return body


class BadRequest(DriftloopError):
    status = 400
    reason = "bad_request"


class ValidationFailed(BadRequest):
    """Every field error of one event at once (the caller fixes them all in one go)."""

    reason = "validation_failed"

    def __init__(self, fields: list[FieldError], *, message: str | None = None) -> None:
        summary = message or "; ".join(f"{f.field}: {f.message}" for f in fields)
        super().__init__(summary, fields=fields)


class Unauthorized(DriftloopError):
    status = 401
    reason = "unauthorized"


class NotFound(DriftloopError):
    status = 404
    reason = "not_found"


class Conflict(DriftloopError):
    """The request clashes with work in progress (one promotion per model at a time)."""

    status = 409
    reason = "conflict"


class PayloadTooLarge(DriftloopError):
    status = 413
    reason = "payload_too_large"


class UnsupportedMediaType(DriftloopError):
    status = 415
    reason = "unsupported_media_type"


class Unavailable(DriftloopError):
    """A dependency (Kafka, the blob store) cannot take the request now; retry later."""

    status = 503
    reason = "unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InferenceTimeout(DriftloopError):
    """A model did not answer one input within its time limit (the input costs too much)."""

    status = 504
    reason = "timeout"


class StackError(DriftloopError):
    """The local stack cannot start or stop a component (one clear line for the CLI)."""

    reason = "stack"
