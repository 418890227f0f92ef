"""drift-check: drift and quality of a model's current window (see driftloop.monitoring.check).

A thin functions-framework handler: PingSource ticks, KafkaSource records, promotion
events and plain JSON check requests all arrive over HTTP; ``DriftCheckService`` does
the work and maps errors to 4xx/5xx with a JSON body.
"""

import flask
import functions_framework

from driftloop import function_factories as factories
from driftloop.function_host import FunctionHost

host = FunctionHost(factories.drift_check, auth=True)


@functions_framework.http
def drift_check(request: flask.Request) -> flask.Response:
    return host(request)
