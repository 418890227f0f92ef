"""An ASGI middleware in front of the model server: what is refused before any parsing.

MLServer's REST app reads the whole body and parses it into pydantic models before a
runtime sees it, so a runtime's own input limit comes too late: a 120 MB JSON body
peaked at 2.6 GB. ``RequestGuard`` answers 413 from ``Content-Length`` alone, and for a
body without one (chunked) as soon as the bytes received pass the limit; a body within
the limit is buffered (it is bounded) and replayed to the app.

It also answers 404 for a model or version the server does not serve (``known``),
before MLServer's per-model metrics create a series for the name in the URL; 415 for a
POST whose body is declared as something other than JSON or, on ``.../infer``, one of the
binary path's media types (MLServer answered a PNG body with a 500); and it inflates a
gzip body itself, within the same limit (MLServer would
inflate it whole: a few megabytes of gzip are gigabytes of JSON).
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from driftloop.events import media

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
KnownModel = Callable[[str, str | None], Awaitable[bool]]

MODEL_PATH = re.compile(r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?:/.*)?")
_MAX_SHOWN = 64


class RequestGuard:
    """Refuse oversize bodies (413) and unknown models (404) before the app runs."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int,
                 known_model: KnownModel | None = None,
                 binary_types: frozenset[str] = frozenset()) -> None:
        """``binary_types``: media types an ``.../infer`` POST may carry as its body (the
        binary path, ``seldon.runtimes.binary``); every other POST body is JSON."""
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.known_model = known_model
        self.binary_types = binary_types

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.known_model is not None:
            refused = await self._unknown_model(scope.get("path", ""))
            if refused is not None:
                await _answer(send, 404, refused)
                return
        headers = {name.lower(): value for name, value in scope.get("headers") or []}
        ctype = media.media_type(headers.get(b"content-type", b"").decode("latin-1"))
        binary = ctype in self.binary_types and scope.get("path", "").endswith("/infer")
        if ctype and scope.get("method") == "POST" and not media.is_json(ctype) \
                and not binary:
            shown = ", ".join(sorted(self.binary_types))
            also = f" (nor, for inference, one of {shown})" if shown else ""
            await _answer(send, 415, f"content-type: {ctype[:_MAX_SHOWN]!r} is not "
                          f"application/json{also}")
            return
        encoding = headers.get(b"content-encoding", b"identity").strip().lower()
        if encoding not in (b"identity", b"gzip"):
            await _answer(send, 415, "request body: content encoding "
                          f"{encoding[:_MAX_SHOWN].decode('latin-1')!r} is not gzip or identity")
            return
        length = _content_length(scope)
        if length == -1:
            await _answer(send, 400, "Content-Length is not a number")
            return
        if length is not None and length > self.max_body_bytes:
            await _answer(send, 413, self._too_large(f"{length} bytes"))
            return
        body = await self._read(receive)
        if body is None:
            await _answer(send, 413, self._too_large("the streamed body"))
            return
        if encoding == b"gzip":
            try:
                body = self._gunzip(body)
            except zlib.error as e:
                await _answer(send, 400, f"request body: not valid gzip ({e})")
                return
            if body is None:
                await _answer(send, 413, self._too_large("the inflated gzip body"))
                return
            scope = {**scope, "headers": [
                (k, v) for k, v in scope.get("headers") or []
                if k.lower() not in (b"content-encoding", b"content-length")
            ] + [(b"content-length", str(len(body)).encode())]}
        await self.app(scope, _replay(body, receive), send)

    def _gunzip(self, body: bytes) -> bytes | None:
        """The inflated body, or None when it would pass the limit (never inflated further)."""
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        out = inflater.decompress(body, self.max_body_bytes + 1)
        if len(out) > self.max_body_bytes or inflater.unconsumed_tail:
            return None
        if not inflater.eof:
            raise zlib.error("truncated stream")
        return out

    def _too_large(self, what: str) -> str:
        return (f"request body: {what} is over the limit of {self.max_body_bytes} bytes "
                "(DRIFTLOOP_SERVING_MAX_REQUEST_BYTES)")

    async def _unknown_model(self, path: str) -> str | None:
        m = MODEL_PATH.fullmatch(path)
        if m is None:
            return None
        name, version = m["name"], m["version"]  # ASGI paths arrive percent-decoded
        assert self.known_model is not None
        if await self.known_model(name, version):
            return None
        shown = name[:_MAX_SHOWN].encode("unicode_escape").decode("ascii")
        if version is None:
            return f"Model {shown} not found"
        v = version[:_MAX_SHOWN].encode("unicode_escape").decode("ascii")
        return f"Model {shown} with version {v} not found"

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it passes the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _content_length(scope: Scope) -> int | None:
    """The declared length; None when absent, -1 when not a number."""
    for name, value in scope.get("headers") or []:
        if name.lower() == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() and len(text) <= 20 else -1
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _answer(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]})
    await send({"type": "http.response.body", "body": body})
