"""The shadow's process: the challenger answers mirrored requests outside the model server.

A shadow run in the server's interpreter shares its lock with the champion's requests: on
a busy machine every mirrored inference (and its event) delays the next answer of the
champion (``bench/shadow.py`` measured it). So the model server hands each mirrored input
to a child process over a pipe; the child, at the lowest CPU priority, loads the
challenger from the registry, answers, and sends the answer's prediction event
(``shadow: true``) to Kafka itself. The parent never waits for it (``ShadowProcess``).

Protocol (stdin of the child): frames (``driftloop.pipe_frames``) whose header names the
prediction id (``pid``). The child answers one line per frame on stdout:
``ok <latency_s>`` or ``err <status>``, which the parent counts under the challenger's
version. Settings come from the environment (``DRIFTLOOP_*``), the model and version
from the command line; the child exits when its stdin closes.

Run as ``python -m driftloop.promotion.shadow_worker <model> <version>``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from driftloop.pipe_frames import frame_head

__all__ = ["ShadowProcess", "main"]

log = logging.getLogger(__name__)
RESTART_S = 5.0
"""A child that exited is started again at most this often."""


def main(argv: list[str] | None = None) -> None:
    """The child: frames from stdin, the challenger's answers to Kafka, results on stdout."""

    from driftloop import events
    from driftloop.blob import open_store
    from driftloop.bus import make_producer
    from driftloop.catalogue import FAMILIES
    from driftloop.errors import DriftloopError
    from driftloop.pipe_frames import read_frame, tensor_of
    from driftloop.promotion.shadow import shadow_id
    from driftloop.registry import Registry
    from driftloop.serving import models
    from driftloop.serving.emitter import PredictionEmitter
    from driftloop.serving.inputs import InputLimits
    from driftloop.settings import Settings

    family, version = (argv or sys.argv[1:])[:2]
    try:
        os.nice(19)  # the champion's requests first
    except OSError:
        pass
    settings = Settings()
    store = open_store(settings.resolved_blob_url, settings)
    limits = InputLimits.from_settings(settings, timeout_s=settings.serving_timeout_for(family))
    model = models.load(family, Registry(store).artifact(family, version), limits=limits)
    from prometheus_client import CollectorRegistry

    # No spool: a shadow answer is never labeled (feedback names the champion's id), and
    # this child outlives a killed server (its stdin closes, it sends what it holds and
    # exits); a spool of its own would only be replayed by a later shadow, if any.
    emitter = PredictionEmitter(
        lambda: make_producer(settings, linger_ms=20), registry=CollectorRegistry()
    )
    spec = FAMILIES.get(family)
    inp, out = sys.stdin.buffer, sys.stdout
    while (frame := read_frame(inp)) is not None:
        head, data = frame
        tensor: Any = tensor_of(head, data)
        media: bytes | None = data if tensor is None else None
        start = time.perf_counter()
        try:
            output = model.predict(media, tensor)
        except Exception as e:
            out.write(f"err {e.status if isinstance(e, DriftloopError) else 500}\n")
            out.flush()
            continue
        latency = time.perf_counter() - start
        pid = str(head["pid"])
        event = events.new_event(
            events.PREDICTION,
            f"driftloop/serving/{family}",
            events.PredictionData(
                model=family,
                version=version,
                output=output,
                latency_ms=round(latency * 1000.0, 3),
                modality=spec.modality if spec else None,
                shadow=True,
                shadow_of=pid,
            ),
            id=shadow_id(pid),
            model=family,
        )
        emitter.offer(event, key=family)
        out.write(f"ok {latency:.6f}\n")
        out.flush()
    emitter.close(5.0)


class ShadowProcess:
    """The server's handle on its shadow child, driven from the server's event loop alone.

    No thread of its own: a thread waking per mirrored request would take the
    interpreter's lock from the champion's requests. Frames are written to the child's
    non-blocking stdin from the loop (a frame the pipe cannot take whole is finished when
    the loop says it is writable; one frame at most waits, further mirrors are dropped and
    counted), and the child's result lines are read when the loop says they are there.
    """

    def __init__(
        self,
        family: str,
        version: str,
        env: Mapping[str, str],
        *,
        loop: asyncio.AbstractEventLoop,
        on_answer: Callable[[float], None],
        on_error: Callable[[str], None],
        on_dropped: Callable[[], None],
        python: str = sys.executable,
    ) -> None:
        self.family, self.version = family, version
        self._env, self._python, self._loop = dict(env), python, loop
        self._on_answer, self._on_error, self._on_dropped = on_answer, on_error, on_dropped
        self._proc: subprocess.Popen[bytes] | None = None
        self._next_start = 0.0
        self._closed = False
        self._unsent = b""
        self._partial = b""
        self._child()  # loads the challenger now, not on the first mirrored request

    def _child(self) -> subprocess.Popen[bytes] | None:
        if self._closed:
            return None
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        now = time.monotonic()
        if now < self._next_start:
            return None
        self._next_start = now + RESTART_S
        self._forget()
        proc = subprocess.Popen(
            [self._python, "-m", "driftloop.promotion.shadow_worker", self.family, self.version],
            env=self._env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        os.set_blocking(proc.stdin.fileno(), False)
        os.set_blocking(proc.stdout.fileno(), False)
        self._loop.add_reader(proc.stdout.fileno(), self._results)
        self._proc, self._unsent, self._partial = proc, b"", b""
        return proc

    def _forget(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream, remove in (
            (proc.stdout, self._loop.remove_reader),
            (proc.stdin, self._loop.remove_writer),
        ):
            if stream is not None:
                try:
                    remove(stream.fileno())
                    stream.close()
                except (OSError, ValueError):
                    pass

    def offer(self, pid: str, media: bytes | None, tensor: Any) -> None:
        """Send one mirrored request to the child, or drop it (counted); never blocks."""
        proc = self._child()
        if proc is None or self._unsent:
            self._on_dropped()
            return
        head: dict[str, object] = {"pid": pid}
        if media is not None:
            data: bytes = media
        else:
            import numpy as np

            arr = np.ascontiguousarray(tensor)
            head.update(dtype=arr.dtype.str, shape=list(arr.shape))
            data = arr.tobytes()
        self._unsent = frame_head(head, len(data)) + data
        self._flush()

    def _flush(self) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            self._unsent = b""
            return
        fd = proc.stdin.fileno()
        try:
            n = os.write(fd, self._unsent)
        except BlockingIOError:
            n = 0
        except OSError:  # the child is gone: restarted on a later offer
            self._unsent = b""
            self._on_dropped()
            return
        self._unsent = self._unsent[n:]
        if self._unsent:
            self._loop.add_writer(fd, self._flush)  # finished when the pipe has room
        else:
            self._loop.remove_writer(fd)

    def _results(self) -> None:
        proc = self._proc
        if proc is None or proc.stdout is None:
            return
        try:
            chunk = os.read(proc.stdout.fileno(), 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:  # the child exited: what it had not answered is lost
            self._forget()
            return
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            kind, _, rest = raw.decode(errors="replace").strip().partition(" ")
            if kind == "ok":
                try:
                    self._on_answer(float(rest))
                except ValueError:
                    continue
            elif kind:
                self._on_error(rest or "500")

    def close(self) -> None:
        """Close the child's stdin (it finishes what it read and exits)."""
        self._closed = True
        self._forget()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
