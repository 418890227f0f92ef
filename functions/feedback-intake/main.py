"""feedback-intake: the HTTP endpoint apps POST feedback CloudEvents to.

A thin functions-framework handler over ``driftloop.intake``: it parses the request
itself (functions-framework's cloud_event signature has no batch mode).
"""

from __future__ import annotations

import atexit

import flask
import functions_framework

from driftloop.intake import IntakeService
from driftloop.settings import Settings

_service: IntakeService | None = None


def service() -> IntakeService:
    """One service per process, built on first use from the environment."""
    global _service
    if _service is None:
        _service = IntakeService(Settings())
        atexit.register(_service.close)
    return _service


@functions_framework.http
def intake(request: flask.Request) -> flask.Response:
    svc = service()
    limit = svc.settings.intake_max_body_bytes
    # Read at most one byte past the limit so an oversize body is refused without
    # buffering all of it.
    body = request.stream.read(limit + 1) if request.content_length is None else b""
    if request.content_length is not None and request.content_length <= limit:
        body = request.get_data(cache=False)
    result = svc.handle(request.method, request.path, dict(request.headers), body)
    return flask.Response(result.body, status=result.status, headers=dict(result.headers))
