"""RequestGuard: oversize bodies and unknown models are refused before the app runs."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from driftloop.serving.guard import RequestGuard


class App:
    """An ASGI app that records the body it read."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.headers: list[dict[bytes, bytes]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.headers.append(dict(scope["headers"]))
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def call(guard: RequestGuard, chunks: list[bytes], *, path: str = "/v2/models/m/infer",
         length: int | str | None = None, headers: dict[str, str] | None = None,
         ) -> tuple[int, dict[str, Any] | None, int]:
    """(status, JSON body or None, chunks the guard pulled from the client)."""
    raw = [] if length is None else [(b"content-length", str(length).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {"type": "http", "path": path, "method": "POST", "headers": raw}
    pending = list(chunks)
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        chunk = pending.pop(0) if pending else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    status = sent[0]["status"]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return status, (json.loads(body) if status != 200 else None), pulled


def test_declared_length_over_the_limit_is_413_without_reading():
    app = App()
    status, body, pulled = call(RequestGuard(app, max_body_bytes=100), [b"x" * 50],
                                length=120_000_000)
    assert status == 413 and pulled == 0 and app.bodies == []
    assert "120000000 bytes is over the limit of 100 bytes" in body["error"]


def test_streamed_body_is_cut_off_once_it_passes_the_limit():
    app = App()
    chunks = [b"x" * 40] * 1000  # no Content-Length: chunked upload
    status, body, pulled = call(RequestGuard(app, max_body_bytes=100), chunks)
    assert status == 413 and "streamed body" in body["error"]
    assert pulled == 3 and app.bodies == []  # stopped reading at 120 bytes


def test_a_body_within_the_limit_reaches_the_app_unchanged():
    app = App()
    status, _, _ = call(RequestGuard(app, max_body_bytes=100), [b"a" * 30, b"b" * 30],
                        length=60)
    assert status == 200 and app.bodies == [b"a" * 30 + b"b" * 30]


def test_a_lying_content_length_is_still_bounded_by_the_stream():
    app = App()
    status, _, _ = call(RequestGuard(app, max_body_bytes=100), [b"x" * 80] * 3, length=10)
    assert status == 413 and app.bodies == []
    status, body, _ = call(RequestGuard(app, max_body_bytes=100), [b"x"], length="1e9")
    assert status == 400 and "Content-Length" in body["error"]


def test_unknown_models_and_versions_are_404_before_the_app():
    async def known(name: str, version: str | None) -> bool:
        return name == "digits" and version in (None, "1")

    app = App()
    guard = RequestGuard(app, max_body_bytes=100, known_model=known)
    assert call(guard, [b"{}"], path="/v2/models/digits/infer")[0] == 200
    assert call(guard, [b"{}"], path="/v2/models/digits/versions/1/infer")[0] == 200
    status, body, _ = call(guard, [b"{}"], path="/v2/models/x\nevil\x00/infer")
    assert status == 404 and body["error"] == "Model x\\nevil\\x00 not found"
    status, body, _ = call(guard, [b"{}"], path="/v2/models/digits/versions/99/infer")
    assert status == 404 and "version 99" in body["error"]
    assert call(guard, [b"{}"], path="/v2/health/ready")[0] == 200
    assert len(app.bodies) == 3


def test_the_server_starts_behind_the_guard_and_bounds_grpc_too(tmp_path):
    from driftloop.serving.server import argv, mlserver_settings
    from driftloop.settings import Settings

    assert argv(tmp_path)[1:4] == ["-m", "seldon.runtimes.server", "start"]
    cfg = mlserver_settings(Settings(state_dir=tmp_path, serving_max_request_bytes=1234))
    assert cfg["grpc_max_message_length"] == 1234


def test_a_gzip_body_is_inflated_within_the_limit_or_refused():
    import gzip

    app = App()
    guard = RequestGuard(app, max_body_bytes=20_000)
    bomb = gzip.compress(b"0" * 10_000_000)  # ~10 KB on the wire, 10 MB inflated
    assert len(bomb) < 20_000
    status, body, _ = call(guard, [bomb[:5000], bomb[5000:]],
                           headers={"content-encoding": "gzip"})
    assert status == 413 and "inflated gzip body" in body["error"] and app.bodies == []
    status, _, _ = call(guard, [gzip.compress(b'{"inputs": []}')],
                        headers={"content-encoding": "gzip"})
    assert status == 200 and app.bodies == [b'{"inputs": []}']
    assert b"content-encoding" not in app.headers[0]
    assert app.headers[0][b"content-length"] == b"14"
    status, body, _ = call(guard, [gzip.compress(b"{}")[:-4]],
                           headers={"content-encoding": "gzip"})
    assert status == 400 and "gzip" in body["error"]
    status, body, _ = call(guard, [b"{}"], headers={"content-encoding": "br"})
    assert status == 415 and "'br'" in body["error"]


def test_a_body_declared_as_something_else_than_json_is_415():
    app = App()
    guard = RequestGuard(app, max_body_bytes=1000)
    status, body, _ = call(guard, [b"\x89PNG"], headers={"content-type": "image/png"})
    assert status == 415 and "'image/png' is not application/json" in body["error"]
    for ctype in ("application/json", "application/json; charset=utf-8",
                  "application/cloudevents+json"):
        assert call(guard, [b"{}"], headers={"content-type": ctype})[0] == 200
    assert call(guard, [b""])[0] == 200  # no body, no type (repository load/unload)


def test_binary_media_types_pass_to_inference_only_and_within_the_limit():
    app = App()
    guard = RequestGuard(app, max_body_bytes=100,
                         binary_types=frozenset({"image/png", "audio/wav"}))
    png = b"\x89PNG\r\n\x1a\n" + b"x" * 20
    assert call(guard, [png], headers={"content-type": "image/png"})[0] == 200
    assert app.bodies[-1] == png
    status, body, _ = call(guard, [png], path="/v2/repository/models/m/load",
                           headers={"content-type": "image/png"})
    assert status == 415 and body["error"].startswith("content-type:")
    status, body, _ = call(guard, [png], headers={"content-type": "text/plain"})
    assert status == 415 and "image/png" in body["error"]  # names what it takes
    status, _, _ = call(guard, [b"x" * 101], headers={"content-type": "image/png"})
    assert status == 413
