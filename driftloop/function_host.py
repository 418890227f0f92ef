"""The functions-framework side of every driftloop function.

A function's ``main.py`` is one line over this: ``FunctionHost`` builds its service
(``handle(method, path, headers, body) -> Response``) on the first request that needs
it, from ``Settings()``, so health probes answer before the heavier libraries
(pydantic models, Kafka clients, numpy) are imported. No thread is started at import:
functions-framework imports the module before gunicorn forks its worker.

Only the standard library and Flask are imported here, to keep cold starts short.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import threading
import time
from typing import Any

import flask

HEALTH_PATHS = ("/healthz", "/readyz")
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024


class FunctionHost:
    """One lazily built service per process behind a functions-framework HTTP handler."""

    def __init__(self, factory: str, *, start: str | None = None, auth: bool = False) -> None:
        """``factory`` is ``"package.module:Name"``, called with the process's Settings;
        ``start`` names a method to call once it is built (e.g. to resume work); ``auth``
        makes every request but the health probes show a control-plane credential
        (``driftloop.auth``: function tokens or Knative's OIDC token)."""
        self.factory = factory
        self.start = start
        self.auth = auth
        self._service: Any = None
        self._checker: Any = None
        self._checker_built = False
        self._metrics: Any = None
        self._lock = threading.Lock()

    def service(self) -> Any:
        with self._lock:
            if self._service is None:
                from driftloop.settings import Settings

                module_name, _, name = self.factory.partition(":")
                cls = getattr(importlib.import_module(module_name), name)
                self._service = cls(Settings())
                if self.start:
                    getattr(self._service, self.start)()
                if hasattr(self._service, "close"):
                    atexit.register(self._service.close)
            return self._service

    def bind(self, service: Any) -> None:
        """Use ``service`` instead of building one (in-process tests); the credential check
        follows the service's settings."""
        with self._lock:
            self._service = service
            self._checker_built = False
            if self.auth and getattr(service, "settings", None) is not None:
                self._build_checker(service.settings)

    def _build_checker(self, settings: Any) -> None:
        from driftloop.auth import FunctionAuth

        self._checker = FunctionAuth.from_settings(settings)
        self._checker_built = True

    def checker(self) -> Any:
        """The credential check (None: open), built before the service: a caller without
        a credential costs no service start."""
        if not self.auth:
            return None
        with self._lock:
            if not self._checker_built:
                from driftloop.settings import Settings

                self._build_checker(Settings())
            return self._checker

    def _refused(self, request: flask.Request) -> flask.Response | None:
        checker = self.checker()
        if checker is None:
            return None
        from driftloop.errors import DriftloopError
        from driftloop.http import error_response

        try:
            checker.check(dict(request.headers))
        except DriftloopError as e:
            r = error_response(e)
            return flask.Response(r.body, status=r.status, headers=dict(r.headers))
        return None

    def __call__(self, request: flask.Request) -> flask.Response:
        if request.method == "GET" and request.path in HEALTH_PATHS:
            return flask.Response(b'{"status": "ok"}', status=200,
                                  content_type="application/json")
        if request.method == "GET" and request.path == "/metrics":
            return self._metrics_page()  # open like the probes: counts, no payloads
        started = time.perf_counter()
        response, body = self._answer(request)
        with contextlib.suppress(Exception):  # counting never fails a request
            self.metrics().observe(request.method, dict(request.headers), body,
                                   response.status_code, response.get_data(),
                                   time.perf_counter() - started)
        return response

    def metrics(self) -> Any:
        """This process's ``FunctionMetrics`` (driftloop.function_metrics), built once."""
        with self._lock:
            if self._metrics is None:
                from driftloop.function_metrics import FunctionMetrics

                self._metrics = FunctionMetrics()
            return self._metrics

    def _metrics_page(self) -> flask.Response:
        """The edge's metrics, then the service's own registry when it has one and is built
        (a scrape never builds the service)."""
        own = getattr(getattr(self._service, "metrics", None), "registry", None)
        from driftloop.function_metrics import CONTENT_TYPE

        page = self.metrics().exposition(*([own] if own is not None else []))
        return flask.Response(page, status=200, content_type=CONTENT_TYPE)

    def _answer(self, request: flask.Request) -> tuple[flask.Response, bytes]:
        """The response and the body read (empty when refused before reading)."""
        refused = self._refused(request)
        if refused is not None:
            return refused, b""
        svc = self.service()
        limit = body_limit(svc)
        declared = request.content_length
        if declared is not None and declared > limit:
            return _too_large(limit), b""  # refused on the declared length, nothing is read
        if declared is None:
            body = request.stream.read(limit + 1)  # chunked: one byte past the limit tells
        else:
            body = request.get_data(cache=False)
        if len(body) > limit:
            return _too_large(limit), b""
        result = svc.handle(request.method, request.path, dict(request.headers), body)
        return (flask.Response(result.body, status=result.status, headers=dict(result.headers)),
                body)


def body_limit(service: Any) -> int:
    """The largest body ``service`` reads: its own ``max_body_bytes`` (intake), else the
    ``function_max_body_bytes`` setting, else 8 MiB."""
    own = getattr(service, "max_body_bytes", None)
    if own is None:
        own = getattr(getattr(service, "settings", None), "function_max_body_bytes", None)
    return int(own) if own is not None else DEFAULT_MAX_BODY_BYTES


def _too_large(limit: int) -> flask.Response:
    """413 naming the limit; a body over it is never handed to the service (which would
    otherwise see an empty or truncated body and act on it)."""
    from driftloop.errors import FieldError, PayloadTooLarge
    from driftloop.http import error_response

    r = error_response(PayloadTooLarge(
        f"body: larger than the limit of {limit} bytes",
        fields=[FieldError("body", "max-size", f"at most {limit} bytes")]))
    return flask.Response(r.body, status=r.status, headers=dict(r.headers))
