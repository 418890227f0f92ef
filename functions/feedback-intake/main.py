"""feedback-intake: the HTTP endpoint apps POST feedback CloudEvents to.

A thin functions-framework handler over ``driftloop.intake.IntakeService``, which parses
the request itself (functions-framework's cloud_event signature has no batch mode).
"""

import flask
import functions_framework

from driftloop import function_factories as factories
from driftloop.function_host import FunctionHost

host = FunctionHost(factories.feedback_intake)


@functions_framework.http
def intake(request: flask.Request) -> flask.Response:
    return host(request)
