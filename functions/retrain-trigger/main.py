"""retrain-trigger: drift events, schedule ticks, feedback and alerts → the retrain policy.

A thin functions-framework handler over ``driftloop.retrain.trigger.RetrainTrigger``
(Alertmanager posts plain JSON, so the handler takes the raw request).
"""

from __future__ import annotations

import atexit

import flask
import functions_framework

from driftloop.retrain.trigger import RetrainTrigger
from driftloop.settings import Settings

_service: RetrainTrigger | None = None


def service() -> RetrainTrigger:
    """One service per process, built on first use from the environment."""
    global _service
    if _service is None:
        _service = RetrainTrigger(Settings())
        atexit.register(_service.close)
    return _service


@functions_framework.http
def retrain_trigger(request: flask.Request) -> flask.Response:
    result = service().handle(request.method, request.path, dict(request.headers),
                              request.get_data(cache=False))
    return flask.Response(result.body, status=result.status, headers=dict(result.headers))
