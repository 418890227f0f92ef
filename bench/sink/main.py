"""The sink of bench/dispatcher.py: a functions-framework handler that answers 200 to
every event and counts them (first and last arrival), served like the functions are."""

import json
import threading
import time

import flask
import functions_framework

_lock = threading.Lock()
_stats = {"n": 0, "first": 0.0, "last": 0.0}


@functions_framework.http
def sink(request: flask.Request) -> flask.Response:
    if request.path == "/_stats":
        with _lock:
            body = json.dumps(_stats)
            if request.method == "POST":  # reset
                _stats.update(n=0, first=0.0, last=0.0)
        return flask.Response(body, status=200, content_type="application/json")
    request.get_data()
    now = time.monotonic()
    with _lock:
        if not _stats["n"]:
            _stats["first"] = now
        _stats["n"] += 1
        _stats["last"] = now
    return flask.Response(b"", status=200)
