"""feedback-intake: the HTTP endpoint apps POST feedback CloudEvents to.

A thin functions-framework handler over ``driftloop.intake``: it parses the request
itself (functions-framework's cloud_event signature has no batch mode). The service
(settings, validation models, Kafka producer) is built in a background thread at import,
so health probes answer while the heavier libraries load; requests wait for it.
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
_ready = threading.Event()



def _build() -> None:
    global _service
    try:
        from driftloop.intake import IntakeService
        from driftloop.settings import Settings

        built = IntakeService(Settings())
        if _service is None:
            _service = built
            atexit.register(built.close)
    finally:
        _ready.set()


threading.Thread(target=_build, name="intake-warmup", daemon=True).start()


def service() -> IntakeService:
    """The process's service; built once, from the environment."""
    _ready.wait()
    if _service is None:  # the warm-up failed: build here so the error surfaces
        _build()
    assert _service is not None
    return _service


@functions_framework.http
def intake(request: flask.Request) -> flask.Response:
    if request.method == "GET" and request.path == "/healthz" and not _ready.is_set():
        return flask.Response(b'{"status": "starting"}', status=200,
                              content_type="application/json")
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
