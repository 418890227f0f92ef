"""The server's answer → the project's exceptions, keeping status, message and field errors."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from driftloop.client.types import parse_fields
from driftloop.errors import (
    BadRequest,
    Conflict,
    DriftloopError,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    ValidationFailed,
)

_BY_STATUS: dict[int, type[DriftloopError]] = {
    400: BadRequest, 401: Unauthorized, 403: Unauthorized, 404: NotFound, 409: Conflict,
    413: PayloadTooLarge, 415: UnsupportedMediaType, 422: BadRequest,
}


def body_of(content: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return {"message": content[:500].decode(errors="replace")}
    return doc if isinstance(doc, dict) else {"message": str(doc)[:500]}


def error_from_response(status: int, content: bytes, what: str) -> DriftloopError:
    """One exception per answer: ``status`` is the server's; ``fields`` its field errors
    (``ValidationFailed`` when the server named any), ``reason`` its ``error`` code."""
    body = body_of(content)
    fields = list(parse_fields(body.get("fields")))
    message = f"{what}: {body.get('message') or body.get('error') or f'HTTP {status}'}"
    err: DriftloopError
    if status == 503:
        err = Unavailable(message)
    elif fields and 400 <= status < 500 and status not in (401, 403, 413):
        err = ValidationFailed(fields, message=message)
    else:
        cls = _BY_STATUS.get(status) or (BadRequest if 400 <= status < 500 else DriftloopError)
        err = cls(message, fields=fields)
    err.status = status
    if isinstance(body.get("error"), str):
        err.reason = body["error"]
    return err


def retry_after_s(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date); None when absent or unusable."""
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
