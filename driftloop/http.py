"""HTTP answers of driftloop's functions: the ``Response`` every service's ``handle``
returns, and the one place a ``DriftloopError`` becomes an HTTP answer."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from driftloop.errors import DriftloopError, Unauthorized, Unavailable


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, obj: Any, headers: Mapping[str, str] | None = None) -> Response:
        """A JSON answer (NaN and Infinity refused: they are not JSON)."""
        return cls(status, json.dumps(obj, allow_nan=False, default=str).encode(),
                   {"content-type": "application/json", **(headers or {})})


def error_response(e: DriftloopError) -> Response:
    """The error's status and JSON body (``{"error", "message", "fields"?}``), with
    ``Retry-After`` for 503 and ``WWW-Authenticate`` for 401."""
    headers: dict[str, str] = {}
    if isinstance(e, Unavailable):
        headers["retry-after"] = str(e.retry_after_s)
    if isinstance(e, Unauthorized):
        headers["www-authenticate"] = 'Bearer realm="driftloop"'
    return Response.json(e.status, e.to_dict(), headers)
