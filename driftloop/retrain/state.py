"""Run state on the blob store: what cooldown, de-duplication and the concurrency cap read.

Keys (relative to the store's root)::

    runs/<model>/<run_id>.json          one run: status, reasons, times, version or error
    runs/<model>/seen/<sha>.json        a handled triggering event (de-duplication)
    runs/<model>/feedback.json          feedback events counted since the last training

Run ids start with a UTC timestamp, so the listing is in start order. Everything lives in
the store, so a restarted function (or another replica) sees the same history. Updates of
one run are whole-object puts (atomic in both store backends).
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

Status = Literal["requested", "running", "succeeded", "failed"]
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


class RunStore:
    """Runs, handled events and feedback counts of every model, in one blob store."""

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
            if "/" in rest or not rest.endswith(".json") or rest == "feedback.json":
                continue
            try:
                out.append(Run.from_dict(json.loads(self.store.get(key))))
            except (KeyError, ValueError, TypeError):
                continue
        return out

    def history(self, model: str, *, now: datetime, timeout_s: float,
                dedup_window_s: float) -> RunHistory:
        """What the policy needs: last start, active runs, recently handled events.

        A failed run does not start the cooldown: the next trigger may retry at once.
        """
        runs = self.runs(model)
        last = max((parse_iso(r.requested_at) for r in runs if r.status != "failed"),
                   default=None)
        active = sum(1 for r in runs if r.is_active(now, timeout_s))
        return RunHistory(last_started=last, active=active,
                          seen_events=self.seen(model, now=now, window_s=dedup_window_s))

    # ------------------------------------------------------------------ de-duplication

    @staticmethod
    def _digest(event_key: str) -> str:
        return hashlib.sha256(event_key.encode()).hexdigest()[:32]

    def mark_seen(self, model: str, event_key: str, at: datetime) -> None:
        key = f"{PREFIX}/{safe_segment(model, field='model')}/seen/{self._digest(event_key)}.json"
        self.store.put(key, json.dumps({"event": event_key, "at": iso(at)}).encode())

    def seen(self, model: str, *, now: datetime, window_s: float) -> frozenset[str]:
        prefix = f"{PREFIX}/{safe_segment(model, field='model')}/seen/"
        out = set()
        for key in self.store.list(prefix):
            try:
                d = json.loads(self.store.get(key))
            except (KeyError, ValueError):
                continue
            if now - parse_iso(d["at"]) <= timedelta(seconds=window_s):
                out.add(d["event"])
        return frozenset(out)

    # ------------------------------------------------------------------ feedback counter

    def feedback_count(self, model: str) -> int:
        try:
            raw = self.store.get(f"{PREFIX}/{safe_segment(model, field='model')}/feedback.json")
        except KeyError:
            return 0
        return int(json.loads(raw).get("count", 0))

    def set_feedback_count(self, model: str, count: int) -> None:
        self.store.put(f"{PREFIX}/{safe_segment(model, field='model')}/feedback.json",
                       json.dumps({"count": count, "at": iso(now_utc())}).encode())
