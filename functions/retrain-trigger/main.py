"""retrain-trigger: drift events, schedule ticks, feedback and alerts → the retrain policy.

A thin functions-framework handler over ``driftloop.retrain.trigger.RetrainTrigger``
(Alertmanager posts plain JSON, so the handler takes the raw request).
"""

import flask
import functions_framework

from driftloop import function_factories as factories
from driftloop.function_host import FunctionHost

host = FunctionHost(factories.retrain_trigger, auth=True)


@functions_framework.http
def retrain_trigger(request: flask.Request) -> flask.Response:
    return host(request)
