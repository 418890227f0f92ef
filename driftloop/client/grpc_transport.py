"""The app clients' gRPC transport for predict: one channel, media bytes raw.

Imported only when a client is given ``serving_grpc`` (``pip install driftloop[grpc]``
brings grpcio and the V2 stubs); everything else in the clients stays HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from driftloop.errors import BadRequest, FieldError
from driftloop.serving.v2 import Prediction

__all__ = ["GrpcTransport"]


class GrpcTransport:
    """Predict over the model server's V2 gRPC endpoint (``host:port``)."""

    def __init__(self, target: str, timeout_s: float) -> None:
        try:
            from driftloop.serving.grpc_client import GrpcV2Client
        except ImportError as e:  # grpcio or the stubs missing
            raise BadRequest(
                f"serving_grpc: the gRPC transport needs `pip install driftloop[grpc]` ({e})",
                fields=[FieldError("serving_grpc", "installed", "needs driftloop[grpc]")],
            ) from e
        self._client = GrpcV2Client(target, timeout_s=timeout_s)

    def predict(
        self, model: str, input: Any, *, version: str | None, request_id: str
    ) -> Prediction:
        """Media bytes as ``raw_input_contents``; a numeric tensor as its raw FP32 bytes."""
        if isinstance(input, bytes | bytearray):
            return self._client.infer_bytes(
                model, bytes(input), version=version, request_id=request_id
            )
        if isinstance(input, Mapping):
            raise BadRequest(
                "input: a V2 request mapping goes over REST, not gRPC",
                fields=[FieldError("input", "grpc-input", "media bytes or a numeric tensor")],
            )
        return self._client.infer_tensor(model, input, version=version, request_id=request_id)

    def close(self) -> None:
        self._client.close()
