"""What a function service is (``Service``), and the one HTTP edge they all share.

``FunctionHost`` (functions-framework side) runs any ``Service``: it builds it from the
process's settings, calls ``open`` once, hands it every request that passed the probes,
the credential check and the body limit, and calls ``close`` at exit.

``FunctionService`` is the edge every driftloop function answers through, so the rules
below hold the same way for feedback-intake, drift-check, retrain-trigger and promote:

* ``GET``/``HEAD`` on a health probe (``/healthz``, ``/readyz``, ``/health/liveness``,
  ``/health/readiness``) is 200; any other method there is 405 with ``Allow: GET``.
* the service's own read routes (``Routes.get``, ``Routes.get_prefixes``) likewise.
* a path the service does not take is 404; a method other than POST on it is 405 with
  ``Allow: POST`` and the service's hint of what to POST.
* a body over ``max_body_bytes`` (declared or read) is 413 naming the limit.
* the body is decoded once: CloudEvents (binary, structured, batch) when the request is
  one, else a plain JSON object when the service takes one, else 415 - then handed to
  ``on_events`` / ``on_batch`` / ``on_json``.
* every ``DriftloopError`` becomes its JSON answer in one place (``driftloop.http``); any
  other exception is logged and answered with a JSON 500 naming the service.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from driftloop import events as ev
from driftloop.errors import (
    BadRequest,
    DriftloopError,
    FieldError,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from driftloop.http import (
    OK,
    Request,
    Response,
    error_response,
    is_health,
    not_allowed,
    not_found,
)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from driftloop.settings import Settings

log = logging.getLogger("driftloop.function")


@dataclass(frozen=True)
class Routes:
    """The requests a function service answers besides the health probes."""

    name: str
    """The function's name (``drift-check``), in the 500 answer and the logs."""
    post: str
    """What a POST takes, told in the 405 answer to any other method."""
    get: tuple[str, ...] = ()
    """Exact paths read with GET/HEAD (answered by ``FunctionService.get``)."""
    get_prefixes: tuple[str, ...] = ()
    """Path prefixes read with GET/HEAD (``/runs/`` + a model)."""
    post_path: str | None = None
    """The one path a POST goes to (``/``); None: any path."""
    plain_json: bool = True
    """A plain JSON object is a request besides CloudEvents (promote takes only events)."""
    batch_items: bool = False
    """A batch is handed over element by element, not yet validated (``on_batch``), so one
    bad element fails alone; otherwise a bad element fails the whole request."""
    failure: str = ""
    """The 500 answer's message (default: '<name> could not handle this request')."""


class Service(Protocol):
    """The lifecycle ``FunctionHost`` runs: built from settings, opened once, asked to
    handle requests, closed at exit."""

    @property
    def settings(self) -> Settings: ...

    @property
    def routes(self) -> Routes: ...

    @property
    def max_body_bytes(self) -> int:
        """The largest body the service reads (413 above it, before it is read)."""
        ...

    def handle(self, request: Request) -> Response: ...

    def open(self) -> None:
        """Called once after the service is built (e.g. resume work a previous process
        left)."""
        ...

    def close(self) -> None: ...

    def metrics_registry(self) -> CollectorRegistry | None:
        """The service's own metrics, appended to the edge's on ``/metrics`` (or None)."""
        ...


class FunctionService:
    """The shared HTTP edge: subclasses set ``routes`` and implement the hooks."""

    routes: Routes
    settings: Settings

    # ------------------------------------------------------------ lifecycle (Service)

    @property
    def max_body_bytes(self) -> int:
        return self.settings.function_max_body_bytes

    def open(self) -> None:
        return None

    def close(self) -> None:
        return None

    def metrics_registry(self) -> CollectorRegistry | None:
        return None

    # ------------------------------------------------------------ hooks

    def get(self, request: Request) -> Response:
        """Answer a read route of ``routes.get`` / ``routes.get_prefixes``."""
        return not_found()

    def authorize(self, request: Request) -> None:
        """Refuse a POST without a valid credential (raise ``Unauthorized``); checked
        before the body is looked at."""
        return None

    def on_events(self, events: list[ev.Event]) -> Response:
        raise UnsupportedMediaType(f"{self.routes.name} takes no CloudEvents")

    def on_batch(self, items: list[Any]) -> Response:
        """A batch's elements, not yet validated (only with ``routes.batch_items``)."""
        return self.on_events([ev.from_structured(i) for i in items])

    def on_json(self, doc: dict[str, Any]) -> Response:
        raise UnsupportedMediaType(f"{self.routes.name} takes only CloudEvents")

    def refused(self, error: DriftloopError) -> None:
        """Told of every error a POST was answered with (e.g. to count it)."""
        return None

    def answered(self, request: Request, response: Response, seconds: float) -> None:
        """Told of every POST answered, with the time it took."""
        return None

    # ------------------------------------------------------------ the edge

    def handle(self, request: Request) -> Response:
        """Answer one request by the rules in this module's docstring."""
        path, method, routes = request.path, request.method, self.routes
        if is_health(path):
            return OK if method in ("GET", "HEAD") else not_allowed("GET")
        if path in routes.get or path.startswith(routes.get_prefixes):
            if method not in ("GET", "HEAD"):
                return not_allowed("GET")
            try:
                return self.get(request)
            except DriftloopError as e:
                return error_response(e)
        if routes.post_path is not None and path not in (routes.post_path, ""):
            return not_found()
        if method != "POST":
            return not_allowed("POST", routes.post)
        started = time.perf_counter()
        response = self._post(request)
        self.answered(request, response, time.perf_counter() - started)
        return response

    def _post(self, request: Request) -> Response:
        try:
            self.authorize(request)
            check_size(request, self.max_body_bytes)
            return self._dispatch(request)
        except DriftloopError as e:
            self.refused(e)
            return error_response(e)
        except Exception:  # a defect must not cost the connection: a JSON 500, logged
            log.exception("%s could not handle a request", self.routes.name)
            failure = DriftloopError(
                self.routes.failure or f"{self.routes.name} could not handle this request"
            )
            self.refused(failure)
            return error_response(failure)

    def _dispatch(self, request: Request) -> Response:
        depth = self.settings.max_json_depth
        if self.routes.batch_items and request.content_type == ev.BATCH:
            return self.on_batch(ev.split_batch(request.body, max_depth=depth))
        if is_event(request) or not self.routes.plain_json:
            return self.on_events(ev.from_http(request.headers, request.body, max_depth=depth))
        doc = ev.load_json(request.body or b"{}", max_depth=depth)
        if not isinstance(doc, dict):
            raise BadRequest(
                "body must be a JSON object",
                fields=[FieldError("body", "object", "must be a JSON object")],
            )
        return self.on_json(doc)


def is_event(request: Request) -> bool:
    """A CloudEvent request: binary mode (``ce-specversion``), structured or batch."""
    return "ce-specversion" in request.headers or request.content_type in (ev.STRUCTURED, ev.BATCH)


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"body: larger than the limit of {limit} bytes",
        fields=[FieldError("body", "max-size", f"at most {limit} bytes")],
    )


def check_size(request: Request, limit: int) -> None:
    """413 when the body is, or declares to be, larger than ``limit``."""
    declared = request.headers.get("content-length", "")
    if (declared.isdigit() and int(declared) > limit) or len(request.body) > limit:
        raise too_large(limit)


def combine(results: Sequence[tuple[int, Mapping[str, Any]]]) -> Response:
    """One answer for the events of one request: the highest status, and the one body or
    the list of them (a batch)."""
    status = max(s for s, _ in results)
    bodies = [b for _, b in results]
    return Response.json(status, bodies[0] if len(bodies) == 1 else bodies)


__all__ = ["FunctionService", "Routes", "Service", "check_size", "combine", "is_event", "too_large"]
