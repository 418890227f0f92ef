"""Child processes of the local stack and of the test fixtures: start, wait, stop."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from driftloop.errors import StackError


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel considers free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections."""
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


_RUN_FLOOR = 10_000
_handed_out: set[int] = set()
_rng = random.Random()  # not the global one: a test that seeds that would repeat runs


def free_port_run(n: int, host: str = "127.0.0.1") -> int:
    """The first of ``n`` consecutive free ports (Flink's reporter ports: the JobManager's,
    then one per TaskManager), below the ephemeral range: inside it, an outgoing connection
    can take a successor between this check and the server's bind. Runs handed out in this
    process are not handed out again."""
    lo, _ = ephemeral_ports()
    if lo - _RUN_FLOOR < 100 * n:
        raise StackError(f"no room for {n} ports below the ephemeral range (from {lo})")
    for _ in range(1000):
        start = _rng.randrange(_RUN_FLOOR, lo - n)
        run = range(start, start + n)
        if not _handed_out.intersection(run) and all(port_is_free(p, host) for p in run):
            _handed_out.update(run)
            return start
    raise StackError(f"no {n} consecutive free ports below {lo}")


def tcp_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True when a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    """True when a GET of ``url`` answers 200 (health and readiness probes)."""
    import httpx

    try:
        return httpx.get(url, timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own process group, stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    with open(log_path, "ab") as log:
        try:
            return subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
                cwd=cwd,
                start_new_session=True,
            )
        except FileNotFoundError as e:
            raise StackError(f"cannot start {argv[0]}: not found") from e


def wait_until(
    check: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    alive: Callable[[], bool] | None = None,
    log_path: Path | None = None,
    interval_s: float = 0.25,
) -> None:
    """Poll ``check`` until true; fail early when the process died, naming its log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        if alive is not None and not alive():
            raise StackError(f"{what} exited while starting{_log_hint(log_path)}")
        time.sleep(interval_s)
    raise StackError(f"{what} not ready after {timeout_s:.0f}s{_log_hint(log_path)}")


def _log_hint(log_path: Path | None) -> str:
    if log_path is None or not log_path.exists():
        return ""
    tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
    last = " | ".join(line.strip()[:200] for line in tail)
    return f" (log {log_path}: {last})" if last else f" (log {log_path})"


def stop_pid(pid: int, *, timeout_s: float = 20.0, kill_group: bool = True) -> None:
    """SIGTERM the process (group), then SIGKILL what is left after ``timeout_s``."""
    stop_pids([pid], timeout_s=timeout_s, kill_group=kill_group)


def stop_pids(pids: Sequence[int], *, timeout_s: float = 20.0, kill_group: bool = True) -> None:
    """SIGTERM every process (group) at once, wait for all of them, then SIGKILL what is
    left after ``timeout_s``. Processes that need each other to shut down cleanly (the
    nodes of a Kafka quorum: a broker's controlled shutdown needs the quorum's approval)
    are stopped together this way; one after the other, the last would wait in vain."""

    def _signal(pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if kill_group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    def _gone(pid: int) -> bool:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return not pid_alive(pid)

    left = [pid for pid in pids if pid_alive(pid)]
    for pid in left:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while left:
        left = [pid for pid in left if not _gone(pid)]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    for pid in left:
        _signal(pid, signal.SIGKILL)
    for pid in left:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
