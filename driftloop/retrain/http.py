"""The JSON response shape shared by the retrain-trigger and promote handlers."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from driftloop.errors import DriftloopError


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any) -> Response:
        return cls(status, json.dumps(payload, default=str).encode(),
                   {"content-type": "application/json"})


def error_response(e: DriftloopError) -> Response:
    return Response.json(e.status, e.to_dict())
