"""Payloads that travel by reference (claim check): the CloudEvents ``dataref`` extension.

A raw input above the sender's threshold is written to the blob store first and its event
carries only ``dataref`` = ``<blob url>/<key>``, so a few dozen bytes cross Kafka and the
JVM instead of the media. Preprocess reads the bytes from the blob store itself
(``BlobRefs``). The output side is the same: a preprocessed payload above the inline limit
is written to the store by the Python function (``BlobWrites``) and the preprocessed
record names it (``payload.blob_key`` and ``dataref``), so only a short string crosses back
into the JVM and Kafka.

Fail closed: a reference is followed only into the configured blob store (the URL must
start with the store's own URL and the rest must be a safe key), so an event cannot make
the job read any other file or bucket. What the store lacks is dead-lettered
(``missing_blob``); a store that stays unreachable after a few tries too
(``blob_unavailable``) — the dead letter keeps the reference, so it can be replayed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from driftloop.blob import check_key
from driftloop.events import DATAREF
from flink.transforms import Rejected

__all__ = ["EXTENSION", "BlobRefs", "BlobWrites", "Resolve", "dataref_for"]

EXTENSION = DATAREF
"""The CloudEvents extension attribute (``ce_dataref`` in Kafka binary mode)."""

T = TypeVar("T")
Resolve = Callable[[str], bytes]
"""A ``dataref`` → the bytes it names; raises ``Rejected``."""


class _Reader(Protocol):
    @property
    def url(self) -> str: ...

    def get(self, key: str) -> bytes: ...


class _Writer(Protocol):
    @property
    def url(self) -> str: ...

    def put(self, key: str, data: bytes) -> None: ...


def dataref_for(store_url: str, key: str) -> str:
    """The ``dataref`` of a key in the store at ``store_url``."""
    return f"{store_url.rstrip('/')}/{check_key(key)}"


class BlobRefs:
    """Follows ``dataref`` URLs into one blob store (opened lazily, once per worker)."""

    def __init__(
        self,
        open_store: Callable[[], _Reader],
        *,
        max_bytes: int,
        attempts: int = 3,
        backoff_s: float = 0.2,
    ) -> None:
        self._open = open_store
        self._store: _Reader | None = None
        self.max_bytes = max_bytes
        self.attempts = attempts
        self.backoff_s = backoff_s

    @property
    def store(self) -> _Reader:
        if self._store is None:
            self._store = self._open()
        return self._store

    def key_of(self, dataref: str) -> str:
        """The blob key a reference names; ``Rejected`` unless it points into the store."""
        base = self.store.url.rstrip("/") + "/"
        if not dataref.startswith(base):
            raise Rejected(
                Rejected.INVALID_EVENT, f"dataref {dataref[:200]!r} is outside the blob store"
            )
        try:
            return check_key(dataref[len(base) :])
        except ValueError as e:
            raise Rejected(Rejected.INVALID_EVENT, f"dataref: {e}") from e

    def __call__(self, dataref: str) -> bytes:
        key = self.key_of(dataref)
        body = _retried(lambda: self.store.get(key), f"dataref {key!r}", self.attempts,
                        self.backoff_s, read=True)
        if len(body) > self.max_bytes:
            raise Rejected(
                Rejected.TOO_LARGE, f"{len(body)} bytes by reference, at most {self.max_bytes}"
            )
        return body


class BlobWrites:
    """Puts payloads into one blob store (opened lazily, once per worker); returns its URL.

    Keys are derived from the input's (source, id), so a record replayed after a restore
    rewrites the same object: the claim check stays exactly once with the Kafka output. A store that
    stays unreachable after a few tries raises ``Rejected`` (``blob_unavailable``): the
    input is dead-lettered with the reason and can be replayed."""

    def __init__(
        self, open_store: Callable[[], _Writer], *, attempts: int = 3, backoff_s: float = 0.2
    ) -> None:
        self._open = open_store
        self._store: _Writer | None = None
        self.attempts = attempts
        self.backoff_s = backoff_s

    @property
    def store(self) -> _Writer:
        if self._store is None:
            self._store = self._open()
        return self._store

    def __call__(self, key: str, body: bytes) -> str:
        def put() -> str:
            self.store.put(key, body)
            return self.store.url

        return _retried(put, f"writing {key!r}", self.attempts, self.backoff_s)


def _retried(
    call: Callable[[], T], what: str, attempts: int, backoff_s: float, *, read: bool = False
) -> T:
    """``call`` with retries and doubling backoff while the store is unreachable; then
    ``Rejected`` (``blob_unavailable``). A read of a missing key (``KeyError``) is
    ``missing_blob`` at once: trying again would not make it appear."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as e:  # the store is unreachable: try again, then park it
            if read and isinstance(e, KeyError):
                raise Rejected(Rejected.MISSING_BLOB, f"{what} is not in the blob store") from e
            if attempt + 1 == attempts:
                raise Rejected(
                    Rejected.BLOB_UNAVAILABLE, f"{what}: {type(e).__name__}: {e}"
                ) from e
            time.sleep(backoff_s * (2**attempt))
    raise AssertionError("unreachable")  # pragma: no cover
