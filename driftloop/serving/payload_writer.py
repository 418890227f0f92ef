"""The payload logger's writer process: kept inputs to the blob store, outside the server.

A model server's request threads and a writer thread in the same interpreter share one
lock: each blob write (a file's staging and rename, or boto3 signing and sending an S3
PUT) holds it for hundreds of microseconds, and on a busy machine a preempted writer
holding it stalls requests for whole scheduler slices (``bench/payload_logging.py``
measured about a millisecond added at p50). So the model server hands each input to a
child process over a pipe, and the child, at the lowest CPU priority, writes it.

Protocol (stdin of the child): frames (``driftloop.pipe_frames``) whose header names the
``model`` and the ``key``. The child answers one line
per frame on stdout: ``ok <model>`` or ``err <model> <reason>``. It reads the store's
settings from its environment (``DRIFTLOOP_*``: secrets never on a command line) and exits
when its stdin closes (its parent stopped or died).

Run as ``python -m driftloop.serving.payload_writer``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from driftloop.pipe_frames import frame_head

if TYPE_CHECKING:
    import numpy as np

    from driftloop.settings import Settings

__all__ = ["WriterProcess", "main", "writer_env"]

log = logging.getLogger(__name__)
RESTART_MIN_S = 1.0
RESTART_MAX_S = 60.0
"""A child that exited is started again at most this often (doubling from the minimum)."""


def main() -> None:
    """The child: frames from stdin to the blob store, one result line each on stdout."""
    from driftloop.blob import open_store
    from driftloop.inputlog import encode_tensor
    from driftloop.pipe_frames import read_frame, tensor_of
    from driftloop.settings import Settings

    # The lowest CPU priority: on a busy node the model server's requests come first (a
    # woken writer would otherwise preempt them); a starved writer fills its queue, and
    # the model server then drops inputs and counts them, never delays requests.
    try:
        os.nice(19)
    except OSError:
        pass
    settings = Settings()
    store = open_store(settings.resolved_blob_url, settings)
    inp, out = sys.stdin.buffer, sys.stdout
    while (frame := read_frame(inp)) is not None:
        head, data = frame
        model = str(head.get("model", "?")).replace(" ", "_")
        try:
            tensor = tensor_of(head, data)
            if tensor is not None:
                data = encode_tensor(tensor)
            store.put(str(head["key"]), data)
            out.write(f"ok {model}\n")
        except Exception as e:  # reported to the parent, which counts it
            reason = f"{type(e).__name__}: {e}".replace("\n", " ")[:300]
            out.write(f"err {model} {reason}\n")
        out.flush()


class WriterProcess:
    """The parent's handle on one writer child: ``send`` frames, results to callbacks."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        on_written: Callable[[str], None],
        on_error: Callable[[str, str], None],
        python: str = sys.executable,
    ) -> None:
        self._env = dict(env)
        self._python = python
        self._on_written = on_written
        self._on_error = on_error
        self._lock = threading.Lock()
        self._pending: deque[str] = deque()
        """Models of the frames sent whose result has not come back yet, oldest first."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._next_start = 0.0
        self._restart_s = 0.0
        self.starts = 0
        """Children started so far."""

    def _start(self) -> subprocess.Popen[bytes]:
        self.starts += 1
        proc = subprocess.Popen(
            [self._python, "-m", "driftloop.serving.payload_writer"],
            env=self._env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
            close_fds=True,
        )
        threading.Thread(
            target=self._results, args=(proc,), name="payload-writer-results", daemon=True
        ).start()
        return proc

    @property
    def in_flight(self) -> int:
        """Frames sent whose result has not come back yet."""
        return len(self._pending)

    def _results(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            kind, _, rest = raw.decode(errors="replace").rstrip("\n").partition(" ")
            _, _, reason = rest.partition(" ")
            with self._lock:
                model = self._pending.popleft() if self._pending else "?"
            if kind == "ok":
                self._restart_s = 0.0  # a child that writes is healthy: restart at once
                self._on_written(model)
            else:
                self._on_error(model, reason)
        proc.wait()
        with self._lock:  # the child is gone: what it had not answered is lost
            lost = list(self._pending)
            self._pending.clear()
        for model in lost:
            self._on_error(model, f"writer process exited ({proc.returncode})")

    def send(self, model: str, key: str, payload: bytes | np.ndarray) -> None:
        """Hand one input to the child (started, or restarted, on demand); raises
        ``OSError`` when it cannot take it."""
        if self._proc is None or self._proc.poll() is not None:
            now = time.monotonic()
            if now < self._next_start:  # a child that keeps dying is not respawned per input
                raise OSError(f"writer process restarting in {self._next_start - now:.1f} s")
            self._restart_s = (
                min(max(self._restart_s * 2, RESTART_MIN_S), RESTART_MAX_S)
                if self._proc is not None
                else 0.0
            )
            self._next_start = now + self._restart_s
            self._proc = self._start()
        head: dict[str, object] = {"model": model, "key": key}
        if isinstance(payload, bytes):
            data: bytes | memoryview = payload
        else:
            head.update(dtype=payload.dtype.str, shape=list(payload.shape))
            data = payload.tobytes()
        stdin = self._proc.stdin
        assert stdin is not None
        with self._lock:
            self._pending.append(model)
        try:
            stdin.write(frame_head(head, len(data)))
            stdin.write(data)
            stdin.flush()
        except OSError:
            with self._lock:
                if self._pending and self._pending[-1] == model:
                    self._pending.pop()  # not sent: the caller counts it
            raise

    def close(self, timeout_s: float = 5.0) -> None:
        """Close the child's stdin (it finishes what it read and exits), then wait."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(timeout=5)


def writer_env(settings: Settings, process_env: Mapping[str, str]) -> dict[str, str]:
    """The child's environment: the parent's settings as ``DRIFTLOOP_*`` variables (secrets
    travel only this way) and, from ``process_env``, what Python needs to start."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
    env = {k: v for k, v in process_env.items() if k in keep}
    env.update(settings.to_env())
    env["DRIFTLOOP_BLOB_URL"] = settings.resolved_blob_url
    return env


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
