"""The functions-framework side of every driftloop function.

A function's ``main.py`` is one line over this: ``FunctionHost(factory)`` with a typed
factory (``Settings -> Service``, ``driftloop.function_factories``) that imports the
service's module only when called. The service is built on the first request that needs
it, so health probes answer before the heavier libraries (pydantic models, Kafka
clients, numpy) are imported. No thread is started at import: functions-framework
imports the module before gunicorn forks its worker.

Only the standard library, Flask and ``driftloop.http`` are imported here, to keep cold
starts short.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import flask

from driftloop.http import OK, Request, Response, error_response, is_health

if TYPE_CHECKING:
    from driftloop.auth import FunctionAuth
    from driftloop.function_metrics import FunctionMetrics
    from driftloop.function_service import Service
    from driftloop.settings import Settings

Factory = Callable[["Settings"], "Service"]


class FunctionHost:
    """One lazily built service per process behind a functions-framework HTTP handler."""

    def __init__(self, factory: Factory, *, auth: bool = False) -> None:
        """``factory`` builds the service from the process's Settings (its ``open`` is
        called once it is built, its ``close`` at exit); ``auth`` makes every request
        but the health probes and ``/metrics`` show a control-plane credential
        (``driftloop.auth``: function tokens or Knative's OIDC token)."""
        self.factory = factory
        self.auth = auth
        self._service: Service | None = None
        self._checker: FunctionAuth | None = None
        self._checker_built = False
        self._metrics: FunctionMetrics | None = None
        self._lock = threading.Lock()

    def service(self) -> Service:
        with self._lock:
            if self._service is None:
                from driftloop.settings import Settings

                service = self.factory(Settings())
                service.open()
                atexit.register(service.close)
                self._service = service
            return self._service

    def bind(self, service: Service) -> None:
        """Use ``service`` instead of building one (in-process tests); the credential check
        follows the service's settings."""
        with self._lock:
            self._service = service
            self._checker_built = False
            if self.auth:
                self._build_checker(service.settings)

    def _build_checker(self, settings: Settings) -> None:
        from driftloop.auth import FunctionAuth

        self._checker = FunctionAuth.from_settings(settings)
        self._checker_built = True

    def checker(self) -> FunctionAuth | None:
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

        try:
            checker.check(dict(request.headers))
        except DriftloopError as e:
            return _flask(error_response(e))
        return None

    def __call__(self, request: flask.Request) -> flask.Response:
        if request.method in ("GET", "HEAD") and is_health(request.path):
            return _flask(OK)  # before anything is built
        if request.method == "GET" and request.path == "/metrics":
            return self._metrics_page()  # open like the probes: counts, no payloads
        started = time.perf_counter()
        response, body = self._answer(request)
        with contextlib.suppress(Exception):  # counting never fails a request
            self.metrics().observe(
                request.method,
                dict(request.headers),
                body,
                response.status_code,
                response.get_data(),
                time.perf_counter() - started,
            )
        return response

    def metrics(self) -> FunctionMetrics:
        """This process's ``FunctionMetrics`` (driftloop.function_metrics), built once."""
        with self._lock:
            if self._metrics is None:
                from driftloop.function_metrics import FunctionMetrics

                self._metrics = FunctionMetrics()
            return self._metrics

    def _metrics_page(self) -> flask.Response:
        """The edge's metrics, then the service's own registry when it has one and is built
        (a scrape never builds the service)."""
        from driftloop.function_metrics import CONTENT_TYPE

        own = self._service.metrics_registry() if self._service is not None else None
        page = self.metrics().exposition(*([own] if own is not None else []))
        return flask.Response(page, status=200, content_type=CONTENT_TYPE)

    def _answer(self, request: flask.Request) -> tuple[flask.Response, bytes]:
        """The response and the body read (empty when refused before reading)."""
        refused = self._refused(request)
        if refused is not None:
            return refused, b""
        svc = self.service()
        limit = svc.max_body_bytes
        declared = request.content_length
        if declared is not None and declared > limit:
            return _too_large(limit), b""  # refused on the declared length, nothing is read
        if declared is None:
            body = request.stream.read(limit + 1)  # chunked: one byte past the limit tells
        else:
            body = request.get_data(cache=False)
        if len(body) > limit:
            return _too_large(limit), b""
        result = svc.handle(Request.of(request.method, request.path, dict(request.headers), body))
        return _flask(result), body


def _flask(r: Response) -> flask.Response:
    return flask.Response(r.body, status=r.status, headers=dict(r.headers))


def _too_large(limit: int) -> flask.Response:
    """413 naming the limit; a body over it is never handed to the service (which would
    otherwise see an empty or truncated body and act on it)."""
    from driftloop.function_service import too_large

    return _flask(error_response(too_large(limit)))


__all__ = ["Factory", "FunctionHost"]
