"""promote: on model.trained, the offline gate, canary, bake, then promotion or rollback.

A thin functions-framework handler over ``driftloop.promotion.service.PromotionService``;
the bake runs in a background thread so delivery is acknowledged within its timeout, and
bakes interrupted by a restart resume when the service starts.
"""

import flask
import functions_framework

from driftloop import function_factories as factories
from driftloop.function_host import FunctionHost

host = FunctionHost(factories.promote, auth=True)


@functions_framework.http
def promote(request: flask.Request) -> flask.Response:
    return host(request)
