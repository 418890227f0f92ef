"""A small V2 inference client for driftloop's models (REST, httpx).

Errors keep the server's status: a 4xx from the model becomes a ``DriftloopError`` with
that status and the server's message, so callers (the CLI, batch, streaming) can tell a
bad input from an unavailable server.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from driftloop.errors import (
    BadRequest,
    DriftloopError,
    InferenceTimeout,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    UnsupportedMediaType,
)
from driftloop.serving import v2
from driftloop.serving.inputs import sniff

_BY_STATUS: dict[int, type[DriftloopError]] = {
    400: BadRequest, 404: NotFound, 413: PayloadTooLarge, 415: UnsupportedMediaType,
    422: BadRequest,
}


def _error(resp: httpx.Response, what: str) -> DriftloopError:
    try:
        message = resp.json().get("error") or resp.text
        from_model = True
    except (json.JSONDecodeError, AttributeError):
        message, from_model = resp.text, False
    if resp.status_code == 504 and from_model:
        # The model's own time limit for this input: retrying the same input cannot help
        # (a proxy's 504 has no JSON error and stays Unavailable).
        return InferenceTimeout(f"{what}: {message}")
    cls = _BY_STATUS.get(resp.status_code)
    if cls is None and 400 <= resp.status_code < 500:
        cls = BadRequest
    if cls is None:
        return Unavailable(f"{what}: server answered {resp.status_code}: {message}")
    err = cls(f"{what}: {message}")
    err.status = resp.status_code
    return err


class V2Client:
    """Calls one V2 server; reuse it (it keeps a connection pool)."""

    def __init__(self, base_url: str, *, timeout_s: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s)

    def __enter__(self) -> V2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _path(self, model: str, version: str | None) -> str:
        return f"/v2/models/{model}" + (f"/versions/{version}" if version else "")

    def infer_request(
        self,
        model: str,
        request: Mapping[str, Any],
        *,
        version: str | None = None,
        request_id: str | None = None,
        emit: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> v2.Prediction:
        """Send a prepared V2 request body; the prediction id is ``request_id`` when given."""
        h = dict(headers or {})
        if request_id:
            h["x-request-id"] = request_id
        if not emit:
            h[v2.EMIT_HEADER] = "off"
        try:
            resp = self._http.post(f"{self._path(model, version)}/infer", json=dict(request),
                                   headers=h)
        except httpx.HTTPError as e:
            raise Unavailable(f"model server {self.base_url} unreachable: {e}") from e
        if resp.status_code != 200:
            raise _error(resp, f"{model} inference")
        pred = v2.parse_response(resp.json(), resp.headers)
        return v2.Prediction(id=resp.headers.get("x-request-id", pred.id), model=pred.model,
                             version=pred.version, output=pred.output)

    def infer_bytes(self, model: str, data: bytes, *, binary: bool = True,
                    **kw: Any) -> v2.Prediction:
        """Infer on a WAV, PNG or JPEG file's bytes: the file as the request body (the
        binary path, ``seldon.runtimes.binary``), or base64 inside V2 JSON (``binary=False``)."""
        if not binary:
            return self.infer_request(model, v2.media_request(data), **kw)
        return self.infer_binary(model, data, **kw)

    def infer_binary(
        self,
        model: str,
        data: bytes,
        *,
        content_type: str | None = None,
        version: str | None = None,
        request_id: str | None = None,
        emit: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> v2.Prediction:
        """POST the media file itself; ``content_type`` defaults to what the bytes start
        like (``application/octet-stream`` when unknown: the model says what is wrong)."""
        h = dict(headers or {})
        h["content-type"] = content_type or v2.media_content_type(data)
        if request_id:
            h["x-request-id"] = request_id
        if not emit:
            h[v2.EMIT_HEADER] = "off"
        try:
            resp = self._http.post(f"{self._path(model, version)}/infer", content=data,
                                   headers=h)
        except httpx.HTTPError as e:
            raise Unavailable(f"model server {self.base_url} unreachable: {e}") from e
        if resp.status_code != 200:
            raise _error(resp, f"{model} inference")
        pred = v2.parse_response(resp.json(), resp.headers)
        return v2.Prediction(id=resp.headers.get("x-request-id", pred.id), model=pred.model,
                             version=pred.version, output=pred.output)

    def infer_tensor(self, model: str, values: Any, *, datatype: str = "FP32",
                     **kw: Any) -> v2.Prediction:
        return self.infer_request(model, v2.tensor_request(values, datatype=datatype), **kw)

    def infer_file(self, model: str, path: Path, **kw: Any) -> v2.Prediction:
        """A media file, or a JSON file holding a tensor (nested lists or a V2 request)."""
        try:
            data = path.read_bytes()
        except OSError as e:
            raise BadRequest(f"{path}: cannot read ({e.strerror or e})") from e
        if sniff(data) is not None:
            return self.infer_bytes(model, data, **kw)
        doc = _json_tensor(path, data)
        if isinstance(doc, dict) and "inputs" in doc:
            return self.infer_request(model, doc, **kw)
        if isinstance(doc, dict) and "data" in doc:
            return self.infer_tensor(model, doc["data"], datatype=doc.get("datatype", "FP32"),
                                     **kw)
        return self.infer_tensor(model, doc, **kw)

    # ------------------------------------------------------------------ repository

    def load(self, model: str) -> None:
        """Ask the server to re-read the registry for ``model`` (V2 repository API)."""
        resp = self._http.post(f"/v2/repository/models/{model}/load")
        if resp.status_code != 200:
            raise _error(resp, f"loading {model}")

    def unload(self, model: str) -> None:
        resp = self._http.post(f"/v2/repository/models/{model}/unload")
        if resp.status_code != 200:
            raise _error(resp, f"unloading {model}")

    def index(self) -> list[dict[str, Any]]:
        """What the server can serve, with state and version."""
        resp = self._http.post("/v2/repository/index", json={})
        if resp.status_code != 200:
            raise _error(resp, "repository index")
        return list(resp.json())

    def ready(self, model: str | None = None) -> bool:
        try:
            path = f"{self._path(model, None)}/ready" if model else "/v2/health/ready"
            return self._http.get(path).status_code == 200
        except httpx.HTTPError:
            return False


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is out of range")
    return value


def _not_a_number(text: str) -> float:
    raise ValueError(f"{text} is not a number")


def _json_tensor(path: Path, data: bytes) -> Any:
    """A JSON file's document, refusing what no V2 server can take (NaN, 1e400, deep nesting)."""
    try:
        return json.loads(data, parse_float=_finite, parse_constant=_not_a_number)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UnsupportedMediaType(
            f"{path}: not a WAV, PNG or JPEG file, nor a JSON tensor") from e
    except ValueError as e:
        raise BadRequest(f"{path}: {e} (tensor values must be finite numbers)") from e
    except RecursionError as e:
        raise BadRequest(f"{path}: JSON nested too deeply") from e
