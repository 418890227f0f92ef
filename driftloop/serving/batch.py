"""Batch inference over stored files: blob prefix in, blob prefix out, resumable.

Every input ``<in>/<path>`` gets ``<out>/<path>.json`` holding ``{id, model, version,
output, input}``; inputs the model rejects get ``<out>/<path>.error.json`` with the
reason. A rerun skips inputs that have either, so an interrupted run picks up where it
stopped; transient failures (server unavailable) write nothing and are retried by the
next run. The prediction id is derived from the model and the input's location, so a
retried input keeps its id. The server emits the prediction events (same ids). Inputs
never pass through Kafka.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from driftloop.errors import BadRequest, DriftloopError, Unavailable

if TYPE_CHECKING:
    from driftloop.blob import BlobStore
    from driftloop.serving.client import V2Client
    from driftloop.settings import Settings

RESULT_SUFFIX = ".json"
ERROR_SUFFIX = ".error.json"
_NAMESPACE = uuid.UUID("6f1d3f1e-8a57-4d5e-9a8e-2b0f8f6c2c11")


def _prefix(p: str) -> str:
    p = p.strip("/")
    return f"{p}/" if p else ""


def prediction_id(store_url: str, model: str, key: str) -> str:
    """Stable id of the prediction of ``model`` on one stored input."""
    return str(uuid.uuid5(_NAMESPACE, f"{model}\n{store_url}\n{key}"))


def plan(store: BlobStore, in_prefix: str, out_prefix: str) -> tuple[list[str], int]:
    """Inputs still to do (sorted) and how many are already done."""
    src, dst = _prefix(in_prefix), _prefix(out_prefix)
    done = {k[len(dst):] for k in store.list(dst)} if dst else set()
    todo, skipped = [], 0
    for key in store.list(src):
        if dst and key.startswith(dst):
            continue
        rel = key[len(src):]
        if rel + RESULT_SUFFIX in done or rel + ERROR_SUFFIX in done:
            skipped += 1
        else:
            todo.append(key)
    return todo, skipped


@dataclass
class BatchSummary:
    model: str
    total: int = 0
    done: int = 0
    skipped: int = 0
    rejected: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "total": self.total, "done": self.done,
                "skipped": self.skipped, "rejected": self.rejected, "failed": self.failed,
                "errors": self.errors[:20]}

    def describe(self) -> str:
        return (f"{self.model}: {self.done} predicted, {self.skipped} already done, "
                f"{self.rejected} rejected, {self.failed} failed (rerun to retry) "
                f"of {self.total}")


def _one(store: BlobStore, client: V2Client, model: str, version: str | None, key: str,
         src: str, dst: str) -> str:
    rel = key[len(src):]
    pid = prediction_id(store.url, model, key)
    try:
        pred = client.infer_bytes(model, store.get(key), version=version, request_id=pid)
    except DriftloopError as e:
        if not 400 <= e.status < 500:  # the server's trouble, not the input's: retry later
            raise
        store.put(f"{dst}{rel}{ERROR_SUFFIX}", json.dumps(
            {"id": pid, "model": model, "input": key, "status": e.status,
             "error": e.message}).encode())
        return "rejected"
    store.put(f"{dst}{rel}{RESULT_SUFFIX}",
              json.dumps({**pred.to_dict(), "input": key}).encode())
    return "done"


def run_batch(
    settings: Settings,
    model: str,
    in_prefix: str,
    out_prefix: str,
    *,
    version: str | None = None,
    progress: bool = True,
) -> BatchSummary:
    """Predict ``model`` on every not-yet-done input under ``in_prefix``."""
    from driftloop.blob import open_store
    from driftloop.serving.client import V2Client

    if not out_prefix.strip("/"):
        raise BadRequest("--out must name a blob prefix")
    store = open_store(settings.resolved_blob_url, settings)
    src, dst = _prefix(in_prefix), _prefix(out_prefix)
    todo, skipped = plan(store, in_prefix, out_prefix)
    summary = BatchSummary(model, total=len(todo) + skipped, skipped=skipped)
    limit = settings.serving_batch_concurrency
    with V2Client(settings.resolved_serving_url, timeout_s=settings.serving_timeout_s) as client, \
            ThreadPoolExecutor(max_workers=limit, thread_name_prefix="batch") as pool, \
            _progress(progress, len(todo), model) as advance:
        work: Iterator[str] = iter(todo)
        inflight: dict[Future[str], str] = {}
        while True:
            while len(inflight) < limit and (key := next(work, None)) is not None:
                inflight[pool.submit(_one, store, client, model, version, key, src, dst)] = key
            if not inflight:
                break
            finished, _ = wait(inflight, return_when=FIRST_COMPLETED)
            for fut in finished:
                key = inflight.pop(fut)
                try:
                    outcome = fut.result()
                except (Unavailable, DriftloopError) as e:
                    summary.failed += 1
                    summary.errors.append(f"{key}: {e.message}")
                else:
                    setattr(summary, outcome, getattr(summary, outcome) + 1)
                advance()
    return summary


class _progress:
    """A rich progress bar (or nothing): ``with _progress(on, n, label) as advance``."""

    def __init__(self, on: bool, total: int, label: str) -> None:
        self.on, self.total, self.label = on, total, label
        self._bar: Any = None

    def __enter__(self) -> Any:
        if not self.on:
            return lambda: None
        from rich.console import Console
        from rich.progress import Progress

        self._bar = Progress(console=Console(stderr=True))
        self._bar.start()
        task = self._bar.add_task(f"predicting {self.label}", total=self.total)
        return lambda: self._bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
