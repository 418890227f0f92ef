"""feedback-intake: the HTTP endpoint apps POST feedback CloudEvents to.

A thin functions-framework handler over ``driftloop.intake``: it parses the request
itself (functions-framework's cloud_event signature has no batch mode). The service
(settings, validation models, Kafka producer) is built on the first request that needs
it, so health probes answer before the heavier libraries are imported. (No thread at
import: functions-framework imports this module before gunicorn forks its worker.)
"""

from __future__ import annotations

import atexit
import threading
from typing import TYPE_CHECKING

import flask
import functions_framework

if TYPE_CHECKING:
    from driftloop.intake import IntakeService

_service: IntakeService | None = None
_lock = threading.Lock()


def service() -> IntakeService:
    """The process's service; built once, from the environment."""
    global _service
    with _lock:
        if _service is None:
            from driftloop.intake import IntakeService
            from driftloop.settings import Settings

            _service = IntakeService(Settings())
            atexit.register(_service.close)
        return _service


@functions_framework.http
def intake(request: flask.Request) -> flask.Response:
    if request.method == "GET" and request.path == "/healthz":
        return flask.Response(b'{"status": "ok"}', status=200, content_type="application/json")
    svc = service()
    limit = svc.settings.intake_max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        body = b""  # refused on the declared length, without reading it
    elif request.content_length is None:
        body = request.stream.read(limit + 1)  # chunked: one byte past the limit tells
    else:
        body = request.get_data(cache=False)
    result = svc.handle(request.method, request.path, dict(request.headers), body)
    return flask.Response(result.body, status=result.status, headers=dict(result.headers))
