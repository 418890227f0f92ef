"""driftloop's binary REST path: ``POST /v2/models/<m>[/versions/<v>]/infer`` with the media
file itself as the body (``Content-Type: image/png``, ``image/jpeg``, ``audio/wav``).

MLServer 1.7's REST app only takes V2 JSON (media as base64 strings, parsed by pydantic:
a 700 KB PNG becomes ~1 MB of JSON decoded twice), and has no binary-data extension;
its gRPC server takes ``raw_input_contents``. This ASGI middleware gives REST the same:
a media body becomes a one-input ``BYTES`` request handed to MLServer's own data plane
(the model's metrics, batching and headers as on the JSON path), and the answer is the
JSON path's V2 response with the same headers. Anything else passes through unchanged.

It sits inside ``RequestGuard`` (body limit, unknown models), so only a body within the
limit reaches it. A declared media type that the bytes do not start like is a 415
naming ``content-type``; an unreadable file is the model's 400 naming ``input``.
"""

from __future__ import annotations

import json
from typing import Any

from mlserver.codecs.json import encode_to_json_bytes
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, Parameters, RequestInput, TensorData
from mlserver.utils import extract_headers

from driftloop.events import media
from driftloop.serving import inputs
from driftloop.serving.guard import MODEL_PATH, ASGIApp, Receive, Scope, Send

__all__ = ["BINARY_TYPES", "BinaryInfer"]

BINARY_TYPES: dict[str, str | None] = {
    inputs.PNG: inputs.PNG,
    inputs.JPEG: inputs.JPEG,
    inputs.WAV: inputs.WAV,
    "audio/x-wav": inputs.WAV,
    "audio/wave": inputs.WAV,
    "application/octet-stream": None,
}
"""Body media types of the binary path, with the format the bytes must start like
(None: whatever the model takes)."""


def media_body(scope: Scope) -> str | None:
    """The declared media type when ``scope`` is a binary inference request, else None."""
    if scope.get("type") != "http" or scope.get("method") != "POST":
        return None
    path = scope.get("path", "")
    if not path.endswith("/infer") or MODEL_PATH.fullmatch(path) is None:
        return None
    for name, value in scope.get("headers") or []:
        if name.lower() == b"content-type":
            essence = media.media_type(value.decode("latin-1"))
            return essence if essence in BINARY_TYPES else None
    return None


class BinaryInfer:
    """Answer binary inference requests through MLServer's data plane."""

    def __init__(self, app: ASGIApp, *, data_plane: Any) -> None:
        self.app = app
        self.data_plane = data_plane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = media_body(scope)
        if declared is None:
            await self.app(scope, receive, send)
            return
        m = MODEL_PATH.fullmatch(scope["path"])
        assert m is not None  # media_body matched it
        body = await _read(receive)
        expected = BINARY_TYPES[declared]
        found = inputs.sniff(body)
        if expected is not None and found != expected:
            seen = f"starts like {found}" if found else "is not a WAV, PNG or JPEG file"
            await _answer(
                send,
                415,
                {
                    "error": f"content-type: declared {declared} but the body {seen}",
                    "fields": [
                        {
                            "field": "content-type",
                            "rule": "media-type",
                            "message": f"must match the body ({seen})",
                        }
                    ],
                },
            )
            return
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []
        }
        request = InferenceRequest.model_construct(
            id=None,
            parameters=Parameters(headers=headers),
            inputs=[
                RequestInput.model_construct(
                    name="input",
                    datatype="BYTES",
                    shape=[1],
                    parameters=None,
                    data=TensorData.model_construct(root=[body]),
                )
            ],
            outputs=None,
        )
        try:
            result = await self.data_plane.infer(request, m["name"], m["version"])
        except MLServerError as e:
            await _answer(send, e.status_code, {"error": str(e)})
            return
        out_headers = extract_headers(result) or {}
        await _answer(send, 200, result.model_dump(exclude_none=True), out_headers)


async def _read(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _answer(
    send: Send, status: int, content: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    try:
        body = encode_to_json_bytes(content)
    except TypeError:
        body = json.dumps(content, default=str).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    # One value per name, case-insensitively, as the JSON path's response has (MLServer
    # adds ``Ce-Id`` beside the runtime's ``ce-id``).
    unique = {k.lower(): str(v) for k, v in (headers or {}).items()}
    raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in unique.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
