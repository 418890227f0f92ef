"""drift-check: drift and quality of a model's current window (see driftloop.monitoring.check).

A thin functions-framework handler: PingSource ticks, KafkaSource records, promotion
events and plain JSON check requests all arrive over HTTP; ``DriftCheckService`` does
the work and maps errors to 4xx/5xx with a JSON body.
"""

from __future__ import annotations

import atexit

import flask
import functions_framework

from driftloop.monitoring.check import DriftCheckService
from driftloop.settings import Settings

_service: DriftCheckService | None = None


def service() -> DriftCheckService:
    """One service per process, built on first use from the environment."""
    global _service
    if _service is None:
        _service = DriftCheckService(Settings())
        atexit.register(_service.close)
    return _service


@functions_framework.http
def drift_check(request: flask.Request) -> flask.Response:
    result = service().handle(
        request.method, request.path, dict(request.headers), request.get_data(cache=False)
    )
    return flask.Response(result.body, status=result.status, headers=dict(result.headers))
