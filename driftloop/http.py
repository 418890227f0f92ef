"""HTTP types of driftloop's functions: the ``Request`` a service's ``handle`` takes, the
``Response`` it returns, and the one place a ``DriftloopError`` becomes an HTTP answer.

Kept to the standard library (and ``driftloop.errors``): ``driftloop.function_host``
imports it before any heavy module, so health probes answer on a cold start.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from driftloop.errors import DriftloopError, Unauthorized, Unavailable

HEALTH_PATHS = ("/healthz", "/readyz", "/health/liveness", "/health/readiness")
"""Liveness and readiness probes every function answers (GET or HEAD, a trailing slash
allowed), before its service is built."""


def is_health(path: str) -> bool:
    return path.rstrip("/") in HEALTH_PATHS


@dataclass(frozen=True)
class Request:
    """One HTTP request as a service sees it: header names lower-cased, the whole body."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes = b""

    @classmethod
    def of(cls, method: str, path: str, headers: Mapping[str, str], body: bytes = b"") -> Request:
        """A request from any header mapping (names are matched case-insensitively)."""
        return cls(method.upper(), path or "/", {k.lower(): v for k, v in headers.items()}, body)

    @classmethod
    def post(cls, headers: Mapping[str, str], body: bytes, path: str = "/") -> Request:
        return cls.of("POST", path, headers, body)

    @property
    def content_type(self) -> str:
        """The media type alone, lower-cased (no parameters)."""
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, obj: Any, headers: Mapping[str, str] | None = None) -> Response:
        """A JSON answer (NaN and Infinity refused: they are not JSON)."""
        return cls(
            status,
            json.dumps(obj, allow_nan=False, default=str).encode(),
            {"content-type": "application/json", **(headers or {})},
        )


OK = Response(200, b'{"status": "ok"}', {"content-type": "application/json"})
"""The health probes' answer."""


def error_response(e: DriftloopError) -> Response:
    """The error's status and JSON body (``{"error", "message", "fields"?}``), with
    ``Retry-After`` for 503 and ``WWW-Authenticate`` for 401."""
    headers: dict[str, str] = {}
    if isinstance(e, Unavailable):
        headers["retry-after"] = str(e.retry_after_s)
    if isinstance(e, Unauthorized):
        headers["www-authenticate"] = 'Bearer realm="driftloop"'
    return Response.json(e.status, e.to_dict(), headers)


def not_allowed(allow: str, message: str = "method not allowed") -> Response:
    """405 with the ``Allow`` header naming the one method the path takes."""
    return Response.json(405, {"error": "method_not_allowed", "message": message}, {"allow": allow})


def not_found() -> Response:
    return Response.json(404, {"error": "not_found", "message": "no such route"})


__all__ = [
    "HEALTH_PATHS",
    "OK",
    "Request",
    "Response",
    "error_response",
    "is_health",
    "not_allowed",
    "not_found",
]
