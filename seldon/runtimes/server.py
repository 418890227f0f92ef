"""``python -m seldon.runtimes.server start <folder>``: ``mlserver start`` with driftloop's
``RequestGuard`` in front of MLServer's REST app.

MLServer 1.7 has no setting that bounds a request body, and its app parses the whole
body before a runtime runs; nor a hook that adds an ASGI middleware. Its ``RESTServer``
builds the app with ``mlserver.rest.server.create_app``, so this entry point wraps that
function: the app it returns gets the guard as its outermost middleware (before the
metrics middleware, CORS and routing), then the binary path (``seldon.runtimes.binary``:
media bodies straight to the data plane, no base64 nor JSON). Everything else is
``mlserver start`` unchanged.
"""

from __future__ import annotations

from typing import Any

from mlserver.errors import ModelNotFound
from mlserver.rest import server as rest_server

from driftloop.serving.guard import KnownModel, RequestGuard
from driftloop.settings import Settings
from seldon.runtimes.binary import BINARY_TYPES, BinaryInfer

_MARK = "_driftloop_guarded"


def known_model(data_plane: Any) -> KnownModel:
    """True when MLServer serves ``name`` (at ``version``), ready or not."""

    async def known(name: str, version: str | None) -> bool:
        try:
            await data_plane.model_ready(name, version)
        except ModelNotFound:
            return False
        return True

    return known


def install(settings: Settings) -> None:
    """Make every REST app MLServer builds from now on carry the guard (idempotent)."""
    original = rest_server.create_app
    if getattr(original, _MARK, False):
        return

    def create_app(mlserver_settings: Any, data_plane: Any,
                   model_repository_handlers: Any) -> Any:
        app = original(mlserver_settings, data_plane=data_plane,
                       model_repository_handlers=model_repository_handlers)
        # The last added is outermost: the guard runs first, then the binary path.
        app.add_middleware(BinaryInfer, data_plane=data_plane)
        app.add_middleware(RequestGuard, max_body_bytes=settings.serving_max_request_bytes,
                           known_model=known_model(data_plane),
                           binary_types=frozenset(BINARY_TYPES))
        return app

    setattr(create_app, _MARK, True)
    rest_server.create_app = create_app


def main() -> None:
    from mlserver.cli.main import main as mlserver_main

    install(Settings())
    mlserver_main()


if __name__ == "__main__":
    main()
