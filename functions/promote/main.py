"""promote: on model.trained, the offline gate, canary, bake, then promotion or rollback.

A thin functions-framework handler over ``driftloop.promotion.service.PromotionService``;
the bake runs in a background thread so delivery is acknowledged within its timeout, and
bakes interrupted by a restart resume when the process starts.
"""

from __future__ import annotations

import atexit

import flask
import functions_framework

from driftloop.promotion.service import PromotionService
from driftloop.settings import Settings

_service: PromotionService | None = None


def service() -> PromotionService:
    """One service per process, built on first use from the environment."""
    global _service
    if _service is None:
        _service = PromotionService(Settings())
        _service.resume()
        atexit.register(_service.close)
    return _service


@functions_framework.http
def promote(request: flask.Request) -> flask.Response:
    result = service().handle(request.method, request.path, dict(request.headers),
                              request.get_data(cache=False))
    return flask.Response(result.body, status=result.status, headers=dict(result.headers))
