"""Payload logging: each answered input to the blob store, off the request path.

``offer`` decides (policy: mode, sample share, size), names the input by its content
(``driftloop.inputlog.input_key``) and puts it on a bounded queue; it never blocks, never
touches the network and never raises. One background thread writes the queue to the blob
store, waking at most every ``BATCH_INTERVAL_S`` to write all that is queued. A full
queue (the store slow or down) or a failed write drops the input and counts it
(``driftloop_input_logs_dropped{reason}``); the inference is never failed or delayed by
it. ``offer`` returns the key only when the input was queued, so a prediction event
carries ``input_ref`` only for inputs on their way; one whose write then fails is counted
here and, by the training run, as ``input_missing``.

The MLServer runtime (REST and gRPC) and the stream predictor use the same class, each
with its model's policy (``LoggingPolicies``). The model server writes through a child
process (``writer_env``, see ``driftloop.serving.payload_writer``) so no blob write
shares its interpreter with requests; the stream predictor and tests write in-process.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from driftloop.errors import NotFound
from driftloop.inputlog import InputLogging, encode_tensor, input_digest, input_key
from driftloop.promotion.routing import canary_point
from driftloop.serving.payload_writer import WriterProcess

if TYPE_CHECKING:
    import numpy as np
    from prometheus_client import CollectorRegistry

    from driftloop.blob import BlobStore

__all__ = ["DEFAULT_QUEUE", "LoggingPolicies", "PayloadLogger"]

log = logging.getLogger(__name__)
DEFAULT_QUEUE = 1000
"""Inputs waiting for the store; at 1 MiB each the bound is about a GiB, and a few seconds
of traffic at the loads this server takes."""
NO_LOGGING = InputLogging(mode="none")
BATCH_INTERVAL_S = 0.05
"""The writer wakes at most this often and then writes everything queued: one wake-up per
request would compete with requests for the interpreter (bench/payload_logging.py)."""


class LoggingPolicies:
    """Each model's ``inputs`` policy section, re-read when its file changes.

    A model without a policy file keeps no inputs: nothing would say how long to keep
    them, and nothing trains on them.
    """

    def __init__(self, policy_dir: Path) -> None:
        self.policy_dir = policy_dir
        self._cache: dict[str, tuple[tuple[int, int, int], InputLogging]] = {}
        self._lock = threading.Lock()

    def for_model(self, model: str) -> InputLogging:
        """The model's section; ``mode: none`` when it has no policy or an unreadable one."""
        from driftloop.policy import load_policy

        path = self.policy_dir / f"{model}.yaml"
        try:
            st = path.stat()
            # size and inode too: two writes within one clock tick share an mtime
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            return NO_LOGGING
        hit = self._cache.get(model)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        try:
            cfg = load_policy(self.policy_dir, model).inputs
        except NotFound:
            cfg = NO_LOGGING
        except Exception as e:  # a broken policy keeps nothing; it never fails inference
            log.warning("policy of %s unreadable, no inputs kept: %s", model, str(e)[:300])
            cfg = NO_LOGGING
        with self._lock:
            self._cache[model] = (stamp, cfg)
        return cfg


class PayloadLogger:
    """A bounded queue and one writer thread; counts written, dropped and skipped inputs."""

    def __init__(
        self,
        store_factory: Callable[[], BlobStore] | None = None,
        *,
        writer_env: Mapping[str, str] | None = None,
        maxsize: int = DEFAULT_QUEUE,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        batch_interval_s: float = BATCH_INTERVAL_S,
    ) -> None:
        from prometheus_client import Counter, Gauge

        if (store_factory is None) == (writer_env is None):
            raise ValueError(
                "a payload logger writes in-process (store_factory) or through "
                "a writer process (writer_env)"
            )
        self._factory = store_factory
        self._writer = (
            None
            if writer_env is None
            else WriterProcess(writer_env, on_written=self._written, on_error=self._failed)
        )
        self._interval = batch_interval_s
        self._store: BlobStore | None = None
        self._queue: queue.Queue[tuple[str, str, bytes | np.ndarray] | None] = queue.Queue(maxsize)
        self._clock = clock
        self._stop = threading.Event()
        kw: dict[str, Any] = {"registry": registry} if registry is not None else {}
        self.written = Counter(
            "driftloop_input_logs_written", "Model inputs kept in the blob store.", ["model"], **kw
        )
        self.dropped = Counter(
            "driftloop_input_logs_dropped",
            "Model inputs that were to be kept but were not, by reason (queue_full, "
            "store_error, too_large).",
            ["model", "reason"],
            **kw,
        )
        self.skipped = Counter(
            "driftloop_input_logs_skipped",
            "Model inputs the policy does not keep (sampled out).",
            ["model"],
            **kw,
        )
        self.depth = Gauge(
            "driftloop_input_logs_queued", "Model inputs waiting for the blob store.", **kw
        )
        self.depth.set_function(self._queue.qsize)
        self._thread = threading.Thread(target=self._run, name="payload-logger", daemon=True)
        self._thread.start()

    def offer(
        self,
        model: str,
        request_id: str,
        cfg: InputLogging,
        *,
        media: bytes | None = None,
        tensor: np.ndarray | None = None,
    ) -> str | None:
        """Queue one input for the store: its key when queued, else None (counted)."""
        try:
            if not cfg.keeps(canary_point(f"{model}\x1f{request_id}")):
                if cfg.enabled:
                    self.skipped.labels(model=model).inc()
                return None
            size = (
                len(media)
                if media is not None
                else (int(tensor.nbytes) if tensor is not None else 0)
            )
            if size == 0:
                return None
            if size > cfg.max_bytes:
                self.dropped.labels(model=model, reason="too_large").inc()
                return None
            digest, ext = input_digest(media, tensor)
            key = input_key(model, self._clock(), digest, ext)
            payload: bytes | np.ndarray = media if media is not None else tensor  # type: ignore[assignment]
            self._queue.put_nowait((model, key, payload))
            return key
        except queue.Full:
            self.dropped.labels(model=model, reason="queue_full").inc()
            return None
        except Exception as e:  # never fail an inference because of its log
            log.warning("input of %s not logged: %s: %s", model, type(e).__name__, e)
            self.dropped.labels(model=model, reason="error").inc()
            return None

    def _written(self, model: str) -> None:
        self.written.labels(model=model).inc()

    def _failed(self, model: str, reason: str) -> None:
        self.dropped.labels(model=model, reason="store_error").inc()
        log.warning("input of %s not kept: %s", model, reason[:200])

    def _write(self, model: str, key: str, payload: bytes | np.ndarray) -> None:
        if self._writer is not None:
            self._writer.send(model, key, payload)  # counted when the child answers
            return
        if self._store is None:
            assert self._factory is not None
            self._store = self._factory()
        data = payload if isinstance(payload, bytes) else encode_tensor(payload)
        self._store.put(key, data)
        self.written.labels(model=model).inc()

    def _run(self) -> None:
        backoff = 0.0
        while True:
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if item is None:
                self._queue.task_done()
                return
            model, key, payload = item
            try:
                self._write(model, key, payload)
                backoff = 0.0
            except Exception as e:
                self._queue.task_done()
                self.dropped.labels(model=model, reason="store_error").inc()
                log.warning("input %s not kept: %s: %s", key, type(e).__name__, str(e)[:200])
                # A store that is down fails fast or slowly; either way the queue, not the
                # requests, absorbs it: pause a little so a dead store costs no CPU.
                backoff = min(max(backoff * 2, 0.1), 5.0)
                if self._stop.wait(backoff):
                    return
                continue
            self._queue.task_done()
            if self._interval > 0 and self._queue.empty():
                self._stop.wait(self._interval)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until the queue is empty (tests, shutdown); True when it emptied."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks > 0 or (
            self._writer is not None and self._writer.in_flight > 0
        ):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued (up to ``timeout_s``), then stop."""
        self.flush(timeout_s)
        self._stop.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout=timeout_s)
        if self._writer is not None:
            self._writer.close(timeout_s)
