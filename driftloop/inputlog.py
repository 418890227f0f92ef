"""Kept model inputs: the policy section that says which, where they live, when they go.

Every answer of a model can keep its input in the blob store so feedback on it can train
the next version, whichever way the input came (V2 REST or gRPC, the stream). The model
server writes it off the request path (``driftloop.serving.payloads``) and the prediction
event carries its key as ``input_ref``; the join copies that into the labeled record and
the training-data reader resolves it.

Layout: ``inputs/model=<m>/date=<YYYY-MM-DD>/hour=<HH>/<sha256>.<ext>``: content-addressed
(a retried request writes the same object; two clients reusing a prediction id cannot
swap each other's inputs), partitioned by the UTC hour the model answered, so the
retention job expires whole partitions by their name without reading a byte. Media keep
their bytes and extension (``png``, ``jpg``, ``wav``, ``bin``); tensors are ``.npy``
(``numpy.save``, no pickles).

The same job expires the model's claim checks: media that travelled by reference
(``raw/model=<m>/date=<d>/...``, written by the client or the app before its event) are
needed only while a record that names them can still be read or replayed, so
``claim_check_retention_days`` should be at least the topics' Kafka retention. Payloads
Flink wrote beside their preprocessed records (``preprocessed/model=<m>/...``) are claim
checks too, and an answer's ``input_ref`` may name them, so they stay for the longer of
the two retentions.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from driftloop.naming import safe_segment

if TYPE_CHECKING:
    import numpy as np

    from driftloop.blob import BlobStore

__all__ = [
    "CLAIM_CHECK_KINDS",
    "KIND",
    "InputLogging",
    "RetentionReport",
    "decode_tensor",
    "encode_tensor",
    "expire_claim_checks",
    "expire_inputs",
    "input_digest",
    "input_key",
    "inputs_prefix",
    "key_time",
]

KIND = "inputs"
CLAIM_CHECK_KINDS = ("raw", "preprocessed")
"""Blob kinds whose objects a Kafka record names by reference (``dataref``)."""
_DAY = re.compile(r"^[^/]+/model=[^/]+/date=(\d{4}-\d{2}-\d{2})/")
NPY_MAGIC = b"\x93NUMPY"
_KEY = re.compile(
    r"^inputs/model=([^/]+)/date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/"
    r"([0-9a-f]{64})\.(png|jpg|wav|bin|npy)$"
)


class InputLogging(BaseModel):
    """A model's ``inputs`` policy section: which inputs are kept, how big, how long."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["all", "sample", "none"] = "all"
    """``all`` inputs, a ``sample`` of ``sample_share``, or ``none`` (nothing is kept)."""
    sample_share: float = Field(0.1, gt=0, le=1)
    """With ``mode: sample``: the share kept, chosen by a hash of the prediction id (a
    retried request is kept or not alike)."""
    max_bytes: int = Field(1024 * 1024, gt=0)
    """A larger input is not kept (counted as ``too_large``); its prediction has no ref."""
    retention_days: int = Field(30, ge=1)
    """The retention job deletes inputs answered more than this many days ago."""
    only_with_feedback: bool = False
    """Keep an input past ``feedback_window_hours`` only when a labeled record names it."""
    feedback_window_hours: float = Field(48.0, gt=0)
    claim_check_retention_days: int = Field(7, ge=1)
    """By-reference media (``raw/``) are deleted this many days after the day they were
    written: at least the Kafka retention of the topics whose records name them (7 days by
    default), so a replay finds them. Preprocessed payloads (``preprocessed/``) stay for
    the longer of this and ``retention_days`` (an ``input_ref`` may name them)."""

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    def keeps(self, point: float) -> bool:
        """Whether an input at ``point`` in [0, 1) (a hash of its id) is kept."""
        if self.mode == "none":
            return False
        return self.mode == "all" or point < self.sample_share


def inputs_prefix(model: str) -> str:
    """``inputs/model=<m>/``: where a model's kept inputs are."""
    return f"{KIND}/model={safe_segment(model, field='model')}/"


def _ext(media: bytes) -> str:
    if media[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if media[:3] == b"\xff\xd8\xff":
        return "jpg"
    if media[:4] == b"RIFF" and media[8:12] == b"WAVE":
        return "wav"
    return "bin"


def input_digest(media: bytes | None, tensor: np.ndarray | None) -> tuple[str, str]:
    """(sha256 hex, extension) of one input: media bytes as sent, a tensor by its dtype,
    shape and values (so the digest needs no serialisation on the request path)."""
    if media is not None:
        return hashlib.sha256(media).hexdigest(), _ext(media)
    if tensor is None:
        raise ValueError("an input is media bytes or a tensor")
    h = hashlib.sha256(f"{tensor.dtype.str}|{tensor.shape}|".encode())
    h.update(tensor.data.cast("B") if tensor.flags.c_contiguous else tensor.tobytes())
    return h.hexdigest(), "npy"


def input_key(model: str, at: datetime, digest: str, ext: str) -> str:
    """The blob key of one kept input (see the module docstring)."""
    at = at.astimezone(UTC)
    return f"{inputs_prefix(model)}date={at.date().isoformat()}/hour={at.hour:02d}/{digest}.{ext}"


def key_time(key: str) -> datetime | None:
    """The start of the hour a kept input's key names, or None if it is no such key."""
    m = _KEY.match(key)
    if m is None:
        return None
    return datetime.combine(
        date.fromisoformat(m.group(2)), datetime.min.time(), tzinfo=UTC
    ) + timedelta(hours=int(m.group(3)))


def encode_tensor(tensor: np.ndarray) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, tensor, allow_pickle=False)
    return buf.getvalue()


def decode_tensor(data: bytes) -> np.ndarray:
    """A kept tensor; ``ValueError`` if the bytes are not a pickle-free ``.npy``."""
    import numpy as np

    if not data.startswith(NPY_MAGIC):
        raise ValueError("not a .npy tensor")
    tensor: np.ndarray = np.load(io.BytesIO(data), allow_pickle=False)
    return tensor


@dataclass
class RetentionReport:
    """What one retention pass over a model's inputs did."""

    model: str
    deleted_expired: int = 0
    """Older than ``retention_days``."""
    deleted_unlabeled: int = 0
    """``only_with_feedback``: older than the feedback window and named by no label."""
    deleted_claim_checks: int = 0
    """``raw/`` and ``preprocessed/`` objects older than ``claim_check_retention_days``."""
    kept: int = 0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "deleted_expired": self.deleted_expired,
            "deleted_unlabeled": self.deleted_unlabeled,
            "deleted_claim_checks": self.deleted_claim_checks,
            "kept": self.kept,
            "errors": self.errors[:20],
        }


def expire_inputs(
    store: BlobStore,
    model: str,
    cfg: InputLogging,
    *,
    now: datetime,
    referenced: Iterable[str] = (),
) -> RetentionReport:
    """Delete ``model``'s kept inputs that are past their retention.

    An input is past it when its hour ended more than ``retention_days`` ago, or, with
    ``only_with_feedback``, more than ``feedback_window_hours`` ago and no labeled record
    names it (``referenced``). Keys that are not kept inputs are left alone. A failed
    delete is reported and the pass goes on (the next pass retries it).
    """
    report = RetentionReport(model)
    refs = set(referenced)
    expire_before = now - timedelta(days=cfg.retention_days)
    unlabeled_before = now - timedelta(hours=cfg.feedback_window_hours)
    for key in list(store.list(inputs_prefix(model))):
        start = key_time(key)
        if start is None:
            continue
        end = start + timedelta(hours=1)
        if end <= expire_before:
            reason = "expired"
        elif cfg.only_with_feedback and end <= unlabeled_before and key not in refs:
            reason = "unlabeled"
        else:
            report.kept += 1
            continue
        if not _delete(store, key, report):
            continue
        if reason == "expired":
            report.deleted_expired += 1
        else:
            report.deleted_unlabeled += 1
    return report


def _delete(store: BlobStore, key: str, report: RetentionReport) -> bool:
    """Delete one key; a failure is reported, never raised (one failed delete never stops
    the pass, the next pass retries it)."""
    try:
        store.delete(key)
    except Exception as e:
        report.errors.append(f"{key}: {type(e).__name__}: {e}"[:300])
        return False
    return True


def expire_claim_checks(
    store: BlobStore, model: str, cfg: InputLogging, *, now: datetime, report: RetentionReport
) -> None:
    """Delete ``model``'s claim checks whose day ended more than their retention ago
    (counted in ``report``; a failed delete is reported and the pass goes on)."""
    days = {
        "raw": cfg.claim_check_retention_days,
        "preprocessed": max(cfg.claim_check_retention_days, cfg.retention_days),
    }
    m = safe_segment(model, field="model")
    for kind in CLAIM_CHECK_KINDS:
        expire_before = now - timedelta(days=days[kind])
        for key in list(store.list(f"{kind}/model={m}/")):
            found = _DAY.match(key)
            if found is None:
                continue
            day_end = datetime.combine(
                date.fromisoformat(found.group(1)), datetime.min.time(), tzinfo=UTC
            ) + timedelta(days=1)
            if day_end <= expire_before and _delete(store, key, report):
                report.deleted_claim_checks += 1
