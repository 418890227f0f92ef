"""A V2 gRPC client for driftloop's models: media files as ``raw_input_contents``.

MLServer's gRPC server (the Open Inference Protocol's ``inference.GRPCInferenceService``)
unpacks ``raw_input_contents`` itself: a media file crosses as its own bytes (a 4-byte
little-endian length, then the file: the protocol's ``BYTES`` raw form), with no base64 and
no JSON. The answer comes back raw too and is decoded here into the JSON path's output
dict. The prediction id is the request's ``id`` (and ``x-request-id`` metadata); the
server answers with it in the response's ``id`` and the version in trailing metadata.

The message stubs are tritonclient's (the same ``inference`` protobuf package).
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from driftloop.errors import (
    BadRequest,
    DriftloopError,
    InferenceTimeout,
    NotFound,
    PayloadTooLarge,
    Unavailable,
)
from driftloop.serving import v2

__all__ = ["GrpcV2Client", "decode_raw_outputs", "media_infer_request"]

_RAW_DTYPES = {name: np.dtype(kind).newbyteorder("<") for name, kind in v2.NUMERIC.items()}
_BY_CODE: dict[grpc.StatusCode, type[DriftloopError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: BadRequest,
    grpc.StatusCode.FAILED_PRECONDITION: BadRequest,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.RESOURCE_EXHAUSTED: PayloadTooLarge,
}


def media_infer_request(
    model: str, data: bytes, *, request_id: str, version: str | None = None
) -> service_pb2.ModelInferRequest:
    """One media file as a ``BYTES [1]`` input carried in ``raw_input_contents``."""
    req = service_pb2.ModelInferRequest(
        model_name=model, model_version=version or "", id=request_id
    )
    tensor = req.inputs.add()
    tensor.name, tensor.datatype = "input", "BYTES"
    tensor.shape.append(1)
    req.raw_input_contents.append(struct.pack("<I", len(data)) + data)
    return req


def tensor_infer_request(
    model: str, values: Any, *, datatype: str, request_id: str, version: str | None = None
) -> service_pb2.ModelInferRequest:
    """A numeric tensor as its little-endian bytes in ``raw_input_contents``."""
    if datatype not in _RAW_DTYPES:
        raise BadRequest(f"datatype: {datatype!r} is not a numeric V2 datatype")
    arr = np.ascontiguousarray(np.asarray(values, dtype=_RAW_DTYPES[datatype]))
    req = service_pb2.ModelInferRequest(
        model_name=model, model_version=version or "", id=request_id
    )
    tensor = req.inputs.add()
    tensor.name, tensor.datatype = "input", datatype
    tensor.shape.extend(arr.shape)
    req.raw_input_contents.append(arr.tobytes())
    return req


def _param(p: service_pb2.InferParameter) -> Any:
    which = p.WhichOneof("parameter_choice")
    return getattr(p, which) if which else None


def _unpack_bytes(raw: bytes) -> list[str]:
    out, offset = [], 0
    while offset + 4 <= len(raw):
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        out.append(raw[offset : offset + size].decode("utf-8", "replace"))
        offset += size
    return out


def decode_raw_outputs(resp: service_pb2.ModelInferResponse) -> dict[str, Any]:
    """The response's tensors (raw or in ``contents``) as the model's output dict."""
    tensors: list[dict[str, Any]] = []
    raw: Sequence[bytes] = resp.raw_output_contents
    for i, out in enumerate(resp.outputs):
        shape = [int(s) for s in out.shape]
        params = {k: _param(v) for k, v in out.parameters.items()}
        data: list[Any]
        if i < len(raw):
            if out.datatype == "BYTES":
                data = _unpack_bytes(raw[i])
            else:
                data = np.frombuffer(raw[i], dtype=_RAW_DTYPES[out.datatype]).tolist()
        else:
            c = out.contents
            data = list(
                c.bytes_contents
                or c.int64_contents
                or c.fp64_contents
                or c.fp32_contents
                or c.int_contents
                or c.bool_contents
            )
            if out.datatype == "BYTES":
                data = [b.decode("utf-8", "replace") for b in data]
        tensors.append({"name": out.name, "shape": shape, "data": data, "parameters": params})
    return v2.decode_outputs(tensors)


class GrpcV2Client:
    """Calls one V2 gRPC endpoint (``host:port``); reuse it (one channel)."""

    def __init__(
        self, target: str, *, timeout_s: float = 60.0, max_message_bytes: int = 64 * 1024 * 1024
    ) -> None:
        self.target, self.timeout_s = target, timeout_s
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
            ],
        )
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    def __enter__(self) -> GrpcV2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def infer_bytes(
        self,
        model: str,
        data: bytes,
        *,
        version: str | None = None,
        request_id: str | None = None,
        emit: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> v2.Prediction:
        """Infer on a WAV, PNG or JPEG file's bytes (raw, no base64)."""
        rid = request_id or str(uuid.uuid4())
        return self.infer(
            media_infer_request(model, data, request_id=rid, version=version),
            emit=emit,
            headers=headers,
        )

    def infer_tensor(
        self,
        model: str,
        values: Any,
        *,
        datatype: str = "FP32",
        version: str | None = None,
        request_id: str | None = None,
        emit: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> v2.Prediction:
        rid = request_id or str(uuid.uuid4())
        return self.infer(
            tensor_infer_request(model, values, datatype=datatype, request_id=rid, version=version),
            emit=emit,
            headers=headers,
        )

    def infer(
        self,
        request: service_pb2.ModelInferRequest,
        *,
        emit: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> v2.Prediction:
        """Send a prepared request; the answer's id is the prediction id."""
        metadata = [(k.lower(), v) for k, v in (headers or {}).items()]
        metadata.append(("x-request-id", request.id))
        if not emit:
            metadata.append((v2.EMIT_HEADER, "off"))
        what = f"{request.model_name} inference"
        try:
            resp, call = self._stub.ModelInfer.with_call(
                request, metadata=metadata, timeout=self.timeout_s
            )
        except grpc.RpcError as e:
            raise _error(e, what) from e
        trailing = {m.key: m.value for m in call.trailing_metadata() or ()}
        version = trailing.get(v2.VERSION_HEADER) or resp.model_version or None
        return v2.Prediction(
            id=resp.id or str(trailing.get("x-request-id", "")),
            model=resp.model_name,
            version=str(version) if version else None,
            output=decode_raw_outputs(resp),
        )


def _error(e: grpc.RpcError, what: str) -> DriftloopError:
    # The errors grpc raises are Calls too (types-grpcio declares the two incompatible).
    call: object = e
    code = call.code() if isinstance(call, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (call.details() if isinstance(call, grpc.Call) else None) or str(e)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return Unavailable(f"{what}: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED or "longer than the limit" in details:
        return InferenceTimeout(f"{what}: {details}")
    cls = _BY_CODE.get(code)
    if cls is None and code == grpc.StatusCode.UNKNOWN:
        # MLServer maps only 400/404/422/500 to gRPC codes: a model's 413/415 is UNKNOWN.
        cls = PayloadTooLarge if "over the limit" in details else BadRequest
    if cls is None:
        return Unavailable(f"{what}: server answered {code.name}: {details}")
    return cls(f"{what}: {details}")
