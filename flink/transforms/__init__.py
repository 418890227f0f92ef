"""Pure transforms behind the Flink jobs: bytes and dicts in, bytes and dicts out.

Nothing here imports Flink or does I/O, so every rule is unit-tested without a cluster
and the stream and batch jobs share exactly the same code.
"""

from __future__ import annotations


class Rejected(Exception):
    """An input that cannot be made model-ready; ``reason`` is a stable code for dead letters."""

    UNDECODABLE = "undecodable"
    EMPTY = "empty"
    TOO_LARGE = "too_large"
    TOO_LONG = "too_long"
    UNSUPPORTED_RATE = "unsupported_sample_rate"
    WRONG_CONTENT_TYPE = "wrong_content_type"
    INVALID_EVENT = "invalid_event"
    MISSING_BLOB = "missing_blob"
    BLOB_UNAVAILABLE = "blob_unavailable"

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
