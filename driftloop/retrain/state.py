"""Run state on the blob store: what cooldown, de-duplication and the concurrency cap read.

Keys (relative to the store's root)::

    runs/<model>/<run_id>.json              one run: status, reasons, times, version or error
    runs/<model>/starts/<generation>.json   the start of a run (created if absent; see below)
    runs/<model>/labels/g<generation>/<sha>.json   a usable label counted for the volume rule
    runs/<model>/labels/seen/<sha>.json     a label (source, id) already counted once

Replicas share this state and coordinate through ``BlobStore.put_if_absent``: a run starts
only by creating ``starts/<n+1>`` after deciding on a history whose newest start was
``n``. Two replicas deciding at once both try the same ``n+1``; one wins, the other reads
the history again (now in cooldown, at the concurrency cap or a duplicate) and decides
again. The start object names the run and its triggering event, so the newest start,
de-duplication and active runs are known even before the run record is written.

Labels for the feedback-volume rule are counted once per (source, id): one marker object
per label under the current generation, so the count is exact, survives restarts, and
restarts from zero when a run starts (its generation moves on).

Run ids start with a UTC timestamp, so the listing is in start order. Updates of one run
are whole-object puts (atomic in both store backends).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from driftloop.blob import BlobStore
from driftloop.errors import NotFound
from driftloop.naming import safe_segment
from driftloop.policy import RunHistory

Status = Literal["requested", "running", "succeeded", "failed", "skipped"]
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "skipped"})
"""Statuses a run never leaves: waiters stop at any of them."""
ACTIVE: frozenset[str] = frozenset({"requested", "running"})
PREFIX = "runs"


def now_utc() -> datetime:
    return datetime.now(UTC)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_iso(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def new_run_id(at: datetime | None = None) -> str:
    return f"{(at or now_utc()).strftime('%Y%m%dt%H%M%S%f')}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Run:
    """One training run, as the store holds it."""

    model: str
    run_id: str
    status: Status
    requested_at: str
    trigger: str = ""
    reasons: tuple[dict[str, Any], ...] = ()
    backend: str = "local"
    handle: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    version: str | None = None
    error: str | None = None
    exit_code: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    skip_reason: str | None = None
    """Why a ``skipped`` run trained nothing (too little usable feedback, with counts)."""
    skipped_inputs: dict[str, list[str]] = field(default_factory=dict)
    """Input references a ``skipped`` run could not read, by reason (the first few)."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Run:
        return cls(**{**d, "reasons": tuple(d.get("reasons") or ())})

    def is_active(self, now: datetime, timeout_s: float) -> bool:
        if self.status not in ACTIVE:
            return False
        return now - parse_iso(self.requested_at) < timedelta(seconds=timeout_s)


@dataclass(frozen=True)
class Start:
    """The claim that started one run: created if absent at ``starts/<generation>``."""

    model: str
    generation: int
    run_id: str
    requested_at: str
    trigger: str = ""
    event_key: str | None = None
    """(source, id) of the triggering event (de-duplication of redeliveries)."""
    manual: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Start:
        return cls(**d)


class RunStore:
    """Runs, their starts and counted labels of every model, in one blob store."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store

    def _run_key(self, model: str, run_id: str) -> str:
        m, r = safe_segment(model, field="model"), safe_segment(run_id, field="run_id")
        return f"{PREFIX}/{m}/{r}.json"

    # ------------------------------------------------------------------ runs

    def put(self, run: Run) -> Run:
        self.store.put(self._run_key(run.model, run.run_id), json.dumps(run.to_dict()).encode())
        return run

    def get(self, model: str, run_id: str) -> Run:
        try:
            return Run.from_dict(json.loads(self.store.get(self._run_key(model, run_id))))
        except KeyError as e:
            raise NotFound(f"model {model!r} has no run {run_id!r}") from e

    def update(self, model: str, run_id: str, **changes: Any) -> Run:
        return self.put(replace(self.get(model, run_id), **changes))

    def runs(self, model: str) -> list[Run]:
        """Every run of ``model``, oldest first."""
        prefix = f"{PREFIX}/{safe_segment(model, field='model')}/"
        out = []
        for key in self.store.list(prefix):
            rest = key[len(prefix):]
            if "/" in rest or not rest.endswith(".json"):
                continue
            try:
                out.append(Run.from_dict(json.loads(self.store.get(key))))
            except (KeyError, ValueError, TypeError):
                continue
        return out

    # ------------------------------------------------------------------ starts

    def _starts_prefix(self, model: str) -> str:
        return f"{PREFIX}/{safe_segment(model, field='model')}/starts/"

    def starts(self, model: str) -> list[Start]:
        """Every start of ``model``, oldest first."""
        prefix = self._starts_prefix(model)
        out = []
        for key in self.store.list(prefix):
            rest = key[len(prefix):]
            if "/" in rest or not rest.endswith(".json") or not rest[:-5].isdigit():
                continue
            try:
                out.append(Start.from_dict(json.loads(self.store.get(key))))
            except (KeyError, ValueError, TypeError):
                continue
        return sorted(out, key=lambda s: s.generation)

    def claim_start(self, start: Start) -> bool:
        """Create ``starts/<generation>``; False when another replica took it first."""
        key = f"{self._starts_prefix(start.model)}{start.generation:010d}.json"
        return self.store.put_if_absent(key, json.dumps(start.to_dict()).encode())

    def history(self, model: str, *, now: datetime, timeout_s: float,
                dedup_window_s: float) -> RunHistory:
        """What the policy needs: last start, active runs, recent triggering events, the
        failures in a row (they lengthen the cooldown) and the start generation.

        A start whose run record is not written yet counts as an active run.
        """
        starts = self.starts(model)
        runs = {r.run_id: r for r in self.runs(model)}
        entries: dict[str, tuple[datetime, str]] = {
            r.run_id: (parse_iso(r.requested_at), r.status) for r in runs.values()}
        for st in starts:
            entries.setdefault(st.run_id, (parse_iso(st.requested_at), "requested"))
        ordered = sorted(entries.values(), key=lambda e: e[0])
        active = sum(1 for at, status in ordered
                     if status in ACTIVE and now - at < timedelta(seconds=timeout_s))
        failures = 0
        for _, status in reversed(ordered):
            if status != "failed":
                break
            failures += 1
        window = timedelta(seconds=dedup_window_s)
        seen = frozenset(st.event_key for st in starts if st.event_key
                         and now - parse_iso(st.requested_at) <= window)
        return RunHistory(last_started=ordered[-1][0] if ordered else None, active=active,
                          seen_events=seen, consecutive_failures=failures,
                          generation=starts[-1].generation if starts else 0)

    def generation(self, model: str) -> int:
        """The newest start's generation (0 before the first run)."""
        prefix = self._starts_prefix(model)
        gens = [int(r[:-5]) for k in self.store.list(prefix)
                if (r := k[len(prefix):]).endswith(".json") and r[:-5].isdigit()]
        return max(gens, default=0)

    # ------------------------------------------------------------------ counted labels

    @staticmethod
    def _digest(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()[:40]

    def _labels_prefix(self, model: str) -> str:
        return f"{PREFIX}/{safe_segment(model, field='model')}/labels/"

    def count_label(self, model: str, label_key: str, generation: int) -> bool:
        """Count one usable label once: True when (source, id) was not counted before.

        The generation marker is created if absent first, the global marker after it: a
        crash in between leaves a redelivery that finds the generation marker taken.
        """
        digest = self._digest(label_key)
        prefix = self._labels_prefix(model)
        if self.store.exists(f"{prefix}seen/{digest}.json"):
            return False
        body = json.dumps({"label": label_key, "at": iso(now_utc()),
                           "generation": generation}).encode()
        created = self.store.put_if_absent(f"{prefix}g{generation:010d}/{digest}.json", body)
        self.store.put_if_absent(f"{prefix}seen/{digest}.json", body)
        return created

    def label_count(self, model: str, generation: int) -> int:
        """Labels counted since the start of ``generation`` (exact: one object each)."""
        return sum(1 for _ in self.store.list(f"{self._labels_prefix(model)}g{generation:010d}/"))
