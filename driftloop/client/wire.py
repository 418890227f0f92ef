"""Requests and answers of the two HTTP surfaces, without I/O (shared by both clients)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from driftloop import events as ev
from driftloop.client.errors import body_of, error_from_response
from driftloop.client.types import Accepted, BatchResult, Feedback, ItemResult
from driftloop.errors import BadRequest, FieldError, ValidationFailed
from driftloop.events import media
from driftloop.naming import is_safe_id
from driftloop.serving import v2
from driftloop.serving.v2 import Prediction

MEDIA_TYPES = {"audio/": "audio", "image/": "image"}


def auth_headers(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}


def make_feedback(source: str, prediction: Prediction | str, *, truth: Any, reward: Any,
                  model: str | None, version: str | None, id: str | None) -> Feedback:
    """A feedback event for a prediction (or its id plus ``model``), checked before sending."""
    if isinstance(prediction, Prediction):
        pid, model, version = prediction.id, model or prediction.model, \
            version or prediction.version
    else:
        pid = prediction
    errors = []
    if model is None:
        errors.append(FieldError("model", "required",
                                 "model is required when feedback names a prediction id"))
    if truth is None and reward is None:
        errors.append(FieldError("truth", "truth-or-reward", "give truth or reward"))
    if errors:
        raise ValidationFailed(errors)
    kw = {"id": id} if id is not None else {}
    return Feedback(source=source, prediction_id=pid, model=str(model), version=version,
                    truth=truth, reward=reward, **kw)


def single_request(fb: Feedback) -> tuple[dict[str, str], bytes]:
    return ev.to_http_binary(fb.to_event())


def batch_request(items: Sequence[Feedback]) -> tuple[dict[str, str], bytes]:
    return ({"content-type": ev.BATCH},
            json.dumps([f.to_dict() for f in items]).encode())


def accepted(fb: Feedback, status: int, content: bytes) -> Accepted:
    """The 202 of one event, or the server's error as an exception."""
    if status != 202:
        raise error_from_response(status, content, "feedback")
    body = body_of(content)
    return Accepted(source=str(body.get("source", fb.source)), id=str(body.get("id", fb.id)))


def batch_items(items: Sequence[Feedback], status: int, content: bytes) -> list[ItemResult]:
    """Per-event results of one batch answer; a whole-batch error (401, 413, ...) raises."""
    body = body_of(content)
    results = body.get("results")
    if status not in (202, 207, 400, 503) or not isinstance(results, list) \
            or len(results) != len(items):
        raise error_from_response(status, content, "feedback batch")
    return [ItemResult.from_dict(r) for r in results]


def merge(source: str, items: Sequence[Feedback], done: Mapping[int, ItemResult]) -> BatchResult:
    return BatchResult(source=source, items=tuple(
        ItemResult(index=i, id=items[i].id, status=done[i].status, error=done[i].error,
                   fields=done[i].fields) for i in range(len(items))))


def infer_body(input: Any, request_id: str) -> dict[str, Any]:
    """A V2 request: media bytes (WAV/PNG/JPEG), a V2 request mapping, or a numeric tensor."""
    if isinstance(input, bytes | bytearray):
        return v2.media_request(bytes(input), request_id=request_id)
    if isinstance(input, Mapping) and "inputs" in input:
        return {**input, "id": request_id}
    return v2.tensor_request(input, request_id=request_id)


def infer_content(input: Any, request_id: str) -> tuple[dict[str, str], bytes]:
    """Headers and body of a REST inference: media bytes as the body itself (the binary
    path, no base64), anything else as a V2 JSON request."""
    headers = {"x-request-id": request_id}
    if isinstance(input, bytes | bytearray):
        return {**headers, "content-type": v2.media_content_type(bytes(input))}, bytes(input)
    return ({**headers, "content-type": "application/json"},
            json.dumps(infer_body(input, request_id)).encode())


def infer_path(model: str, version: str | None) -> str:
    return f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"


def new_request_id(request_id: str | None) -> str:
    if request_id is None:
        return str(uuid.uuid4())
    if not is_safe_id(request_id):
        raise BadRequest("request_id: not a safe id",
                         fields=[FieldError("request_id", "safe-id", "printable ASCII ids")])
    return request_id


def prediction(model: str, request_id: str, status: int, headers: Mapping[str, str],
               content: bytes) -> Prediction:
    if status != 200:
        raise error_from_response(status, content, f"{model} inference")
    p = v2.parse_response(json.loads(content), headers)
    return Prediction(id=headers.get("x-request-id") or p.id or request_id, model=p.model,
                      version=p.version, output=dict(p.output))


def modality_of(content_type: str) -> str:
    essence = media.media_type(content_type)
    for prefix, modality in MEDIA_TYPES.items():
        if essence.startswith(prefix):
            return modality
    raise ValidationFailed([FieldError("content_type", "media-type",
                                       "raw inputs are audio/* or image/*")])
