"""The V2 (Open Inference Protocol) shapes driftloop's models speak, as pure functions.

Inputs: one tensor named ``input``: media bytes as ``BYTES`` ``[1]`` (base64 in JSON; raw
on the binary paths: REST with the file as the body, gRPC ``raw_input_contents``),
or a numeric tensor (PCM samples, pixels, digit features). Outputs: one tensor per key
of the model's output dict; a key holding one value is a ``[1]`` tensor marked
``"scalar": true`` so clients get the same dict back (``decode_outputs``).
"""

from __future__ import annotations

import base64
import binascii
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from driftloop.errors import BadRequest, FieldError, PayloadTooLarge
from driftloop.naming import SAFE_ID_RULE, is_safe_id
from driftloop.serving.inputs import bad, check_size, sniff

NUMERIC = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64",
}
REQUEST_ID_HEADERS = ("x-request-id", "ce-id")
EMIT_HEADER = "x-driftloop-emit"
VERSION_HEADER = "x-driftloop-model-version"


@dataclass(frozen=True)
class Prediction:
    """One answer of a model: the id to send feedback with, the version that answered."""

    id: str
    model: str
    version: str | None
    output: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "model": self.model, "version": self.version,
                "output": dict(self.output)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Prediction:
        return cls(id=str(d["id"]), model=str(d["model"]), version=d.get("version"),
                   output=dict(d.get("output") or {}))


# --------------------------------------------------------------------------- requests


def media_request(data: bytes, *, request_id: str | None = None) -> dict[str, Any]:
    """A V2 request carrying a WAV, PNG or JPEG file."""
    return {
        "id": request_id or str(uuid.uuid4()),
        "inputs": [{
            "name": "input", "datatype": "BYTES", "shape": [1],
            "parameters": {"content_type": "base64"},
            "data": [base64.b64encode(data).decode()],
        }],
    }


def media_content_type(data: bytes) -> str:
    """The binary path's ``Content-Type`` for a media file (by its first bytes)."""
    return sniff(data) or "application/octet-stream"


def tensor_request(values: Any, *, datatype: str = "FP32",
                   request_id: str | None = None) -> dict[str, Any]:
    """A V2 request carrying a numeric tensor given as (nested) lists."""
    import numpy as np

    if datatype not in NUMERIC:
        raise bad("datatype", "v2-datatype", f"{datatype!r} is not a numeric V2 datatype")
    try:
        arr = np.asarray(values)
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"values are {arr.dtype}, not numbers of one nested shape")
    except (ValueError, OverflowError, RecursionError) as e:
        raise bad("input", "tensor", f"not a numeric tensor ({e})") from e
    return {
        "id": request_id or str(uuid.uuid4()),
        "inputs": [{"name": "input", "datatype": datatype, "shape": list(arr.shape),
                    "data": arr.reshape(-1).tolist()}],
    }


def request_id(headers: Mapping[str, str] | None, body_id: str | None) -> str:
    """The prediction id: a request id header when sent, else the body's id, else new.

    The id goes back in response headers and into the prediction event's Kafka headers,
    so one that is not a safe id (``driftloop.naming``) is a 400, never echoed.
    """
    for name in REQUEST_ID_HEADERS:
        value = (headers or {}).get(name)
        if value is not None:
            return _safe_id(name, value)
    if body_id is None or body_id == "":
        return str(uuid.uuid4())
    return _safe_id("id", body_id)


def _safe_id(field: str, value: object) -> str:
    if not is_safe_id(value):
        shown = repr(value[:40]) + ("..." if len(value) > 40 else "") \
            if isinstance(value, str) else type(value).__name__
        raise bad(field, "id", f"{shown} {SAFE_ID_RULE}")
    return value  # type: ignore[return-value]


def decode_input(
    inputs: Sequence[Mapping[str, Any]], *, max_bytes: int
) -> tuple[bytes | None, Any | None]:
    """The one input of a request as media bytes or a numpy array (``BadRequest`` if not)."""
    import numpy as np

    if len(inputs) != 1:
        raise bad("inputs", "one-input", f"expected exactly one input tensor, got {len(inputs)}")
    inp = inputs[0]
    datatype = str(inp.get("datatype", ""))
    shape = [int(s) for s in inp.get("shape") or []]
    data = inp.get("data")
    data = data.get("root", data) if isinstance(data, Mapping) else data
    if datatype == "BYTES":
        items = list(data) if isinstance(data, list | tuple) else [data]
        if len(items) != 1:
            raise bad("inputs[0].data", "one-file", f"expected one file, got {len(items)}")
        item = items[0]
        params = inp.get("parameters") or {}
        if isinstance(item, bytes | bytearray):
            raw = bytes(item)
        elif isinstance(item, str) and params.get("content_type") == "base64":
            if len(item) > max_bytes * 4 // 3 + 4:
                raise PayloadTooLarge(f"input: over the limit of {max_bytes} bytes",
                                      fields=[FieldError("input", "max-bytes",
                                                         f"at most {max_bytes} bytes")])
            try:
                raw = base64.b64decode(item, validate=True)
            except (binascii.Error, ValueError) as e:
                raise bad("inputs[0].data", "base64", f"not valid base64 ({e})") from e
        elif isinstance(item, str):
            raw = item.encode()
        else:
            raise bad("inputs[0].data", "bytes", "BYTES data must be a (base64) string")
        return check_size(raw, max_bytes), None
    if datatype not in NUMERIC:
        raise bad("inputs[0].datatype", "v2-datatype",
                  f"{datatype!r} is not BYTES or a numeric V2 datatype")
    if not shape or any(s < 0 for s in shape):
        raise bad("inputs[0].shape", "shape", f"invalid shape {shape}")
    n = math.prod(shape)
    if n * np.dtype(NUMERIC[datatype]).itemsize > max_bytes:
        raise PayloadTooLarge(f"input: tensor of {n} elements is over the limit of "
                              f"{max_bytes} bytes")
    try:
        arr = _in_range(np.asarray(data, dtype=np.float64), datatype)
        if arr.size != n:
            raise ValueError(f"{arr.size} values for shape {shape}")
        return None, np.asarray(data, dtype=NUMERIC[datatype]).reshape(shape)
    except (TypeError, ValueError, OverflowError) as e:
        raise BadRequest(f"inputs[0].data: does not match datatype and shape ({e})",
                         fields=[FieldError("inputs[0].data", "shape", str(e))]) from e


def _in_range(values: Any, datatype: str) -> Any:
    """``values`` (as float64) when every one fits ``datatype``, else ``BadRequest``.

    numpy would wrap ``-1`` to ``255`` as UINT8 (or raise OverflowError, by version) and
    round ``1e39`` to infinity as FP32: neither is the number the client sent.
    """
    import numpy as np

    field = "inputs[0].data"
    if not np.all(np.isfinite(values)):
        raise bad(field, "finite", "values must be finite numbers (no NaN or infinity)")
    dtype = np.dtype(NUMERIC[datatype])
    if values.size == 0:
        return values
    lo, hi = float(values.min()), float(values.max())
    if dtype.kind == "b":
        if not np.all((values == 0) | (values == 1)):
            raise bad(field, "range", "BOOL values must be true/false (or 0/1)")
        return values
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if lo < info.min or hi > info.max:
            raise bad(field, "range", f"values {lo:g}..{hi:g} are outside {datatype}'s range "
                      f"{info.min}..{info.max}")
        if not np.all(np.floor(values) == values):
            raise bad(field, "range", f"{datatype} values must be whole numbers")
        return values
    finfo = np.finfo(dtype)
    if lo < float(finfo.min) or hi > float(finfo.max):
        raise bad(field, "range", f"values {lo:g}..{hi:g} are outside {datatype}'s range")
    return values


# --------------------------------------------------------------------------- responses


def _flat(values: Sequence[Any]) -> tuple[list[Any], list[int]]:
    if values and all(isinstance(v, list | tuple) for v in values):
        inner = [list(v) for v in values]
        width = len(inner[0])
        if all(len(v) == width for v in inner):
            return [x for v in inner for x in v], [len(inner), width]
    return list(values), [len(values)]


def _datatype(values: Sequence[Any]) -> str:
    if any(isinstance(v, str) for v in values):
        return "BYTES"
    if values and all(isinstance(v, bool | int) for v in values):
        return "INT64"
    return "FP64"


def encode_outputs(output: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A model's output dict as V2 output tensors (see the module docstring)."""
    out = []
    for name, value in output.items():
        if isinstance(value, list | tuple):
            flat, shape = _flat(value)
            dt = _datatype(flat)
            params: dict[str, Any] = {"content_type": "str"} if dt == "BYTES" else {}
        else:
            flat, shape, dt = [value], [1], _datatype([value])
            params = {"scalar": True, **({"content_type": "str"} if dt == "BYTES" else {})}
        if dt == "BYTES":
            flat = [str(v) for v in flat]
        out.append({"name": name, "datatype": dt, "shape": shape, "data": flat,
                    "parameters": params})
    return out


def decode_outputs(outputs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """V2 output tensors back to the model's output dict."""
    result: dict[str, Any] = {}
    for o in outputs:
        data = o.get("data")
        data = list(data.get("root", [])) if isinstance(data, Mapping) else list(data or [])
        params = o.get("parameters") or {}
        shape = list(o.get("shape") or [len(data)])
        if params.get("scalar"):
            result[o["name"]] = data[0] if data else None
        elif len(shape) == 2 and shape[1] > 0:
            w = shape[1]
            result[o["name"]] = [data[i:i + w] for i in range(0, len(data), w)]
        else:
            result[o["name"]] = data
    return result


def parse_response(body: Mapping[str, Any], headers: Mapping[str, str] | None = None,
                   ) -> Prediction:
    """A V2 response body as a ``Prediction`` (version from the header when present)."""
    version = (headers or {}).get(VERSION_HEADER) or body.get("model_version")
    return Prediction(id=str(body.get("id")), model=str(body.get("model_name")),
                      version=version, output=decode_outputs(body.get("outputs") or []))
