"""The V2 (Open Inference Protocol) shapes driftloop's models speak, as pure functions.

Inputs: one tensor named ``input``: media bytes as ``BYTES`` ``[1]`` (base64 in JSON),
or a numeric tensor (PCM samples, pixels, digit features). Outputs: one tensor per key
of the model's output dict; a key holding one value is a ``[1]`` tensor marked
``"scalar": true`` so clients get the same dict back (``decode_outputs``).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from driftloop.errors import BadRequest, FieldError, PayloadTooLarge
from driftloop.serving.inputs import bad, check_size

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


def tensor_request(values: Any, *, datatype: str = "FP32",
                   request_id: str | None = None) -> dict[str, Any]:
    """A V2 request carrying a numeric tensor given as (nested) lists."""
    import numpy as np

    if datatype not in NUMERIC:
        raise bad("datatype", "v2-datatype", f"{datatype!r} is not a numeric V2 datatype")
    arr = np.asarray(values)
    return {
        "id": request_id or str(uuid.uuid4()),
        "inputs": [{"name": "input", "datatype": datatype, "shape": list(arr.shape),
                    "data": arr.reshape(-1).tolist()}],
    }


def request_id(headers: Mapping[str, str] | None, body_id: str | None) -> str:
    """The prediction id: a request id header when sent, else the body's id, else new."""
    for name in REQUEST_ID_HEADERS:
        value = (headers or {}).get(name)
        if value and 0 < len(value) <= 256:
            return value
    return body_id or str(uuid.uuid4())


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
    n = int(np.prod(shape))
    if n * np.dtype(NUMERIC[datatype]).itemsize > max_bytes:
        raise PayloadTooLarge(f"input: tensor of {n} elements is over the limit of "
                              f"{max_bytes} bytes")
    try:
        arr = np.asarray(data, dtype=NUMERIC[datatype])
        if arr.size != n:
            raise ValueError(f"{arr.size} values for shape {shape}")
        return None, arr.reshape(shape)
    except (TypeError, ValueError) as e:
        raise BadRequest(f"inputs[0].data: does not match datatype and shape ({e})",
                         fields=[FieldError("inputs[0].data", "shape", str(e))]) from e


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
