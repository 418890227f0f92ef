"""The baseline for bench/intake.py: a functions-framework handler that does nothing."""

import flask
import functions_framework


@functions_framework.http
def hello(request: flask.Request) -> flask.Response:
    request.get_data()
    return flask.Response(b'{"status": "accepted"}', status=202,
                          content_type="application/json")
