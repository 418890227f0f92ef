"""Cold start of each function: process start → first 2xx, against a hello-world function.

Every function in functions/ that has a main.py is started the way its container starts
(functions-framework with the func.yaml target); GET /healthz is polled until it answers
2xx, and the time is compared with a hello-world functions-framework function started the
same way in the same run (medians, starts interleaved). RSS is read from /proc right after
the first 2xx.

    .venv/bin/python bench/cold_start.py [--runs 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
FF = str(Path(sys.executable).with_name("functions-framework"))

HELLO = """
import functions_framework


@functions_framework.http
def hello(request):
    return "ok"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cold_start(source: Path, target: str, env: dict[str, str]) -> tuple[float, float]:
    """Seconds from spawn to the first 2xx on GET /healthz, and RSS (MiB) right after."""
    port = _free_port()
    argv = [
        FF,
        "--target",
        target,
        "--source",
        str(source),
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        cwd=source.parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        with httpx.Client(timeout=1.0) as client:
            while True:
                if proc.poll() is not None:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise RuntimeError(f"{source} exited: {err[-500:]}")
                try:
                    r = client.get(f"http://127.0.0.1:{port}/healthz")
                    if 200 <= r.status_code < 300:
                        return time.perf_counter() - t0, _rss_mib(proc.pid)
                except httpx.TransportError:
                    pass
                if time.perf_counter() - t0 > 60:
                    raise RuntimeError(f"{source}: no 2xx within 60 s")
                time.sleep(0.005)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def functions() -> list[tuple[str, Path, str]]:
    """(name, main.py, target) for every function whose code exists."""
    out = []
    for fy in sorted((ROOT / "functions").glob("*/func.yaml")):
        main = fy.parent / "main.py"
        if main.exists():
            spec = yaml.safe_load(fy.read_text())
            envs = {e["name"]: e["value"] for e in spec["build"]["buildEnvs"]}
            out.append((fy.parent.name, main, envs["GOOGLE_FUNCTION_TARGET"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        hello = Path(tmp) / "main.py"
        hello.write_text(HELLO)
        env = {
            **os.environ,
            "DRIFTLOOP_STATE_DIR": str(Path(tmp) / "state"),
            "PYTHONPATH": str(ROOT),
        }
        subjects = [("hello-world", hello, "hello"), *functions()]
        times: dict[str, list[float]] = {name: [] for name, _, _ in subjects}
        rss: dict[str, list[float]] = {name: [] for name, _, _ in subjects}
        for _ in range(args.runs):  # interleaved: machine load hits every subject alike
            for name, source, target in subjects:
                t, r = cold_start(source, target, env)
                times[name].append(t)
                rss[name].append(r)
    base = statistics.median(times["hello-world"])
    rows = {
        name: {
            "median_s": round(statistics.median(ts), 3),
            "ratio": round(statistics.median(ts) / base, 2),
            "rss_mib": round(statistics.median(rss[name]), 1),
        }
        for name, ts in times.items()
    }
    if args.json:
        print(json.dumps({"runs": args.runs, "functions": rows}, indent=2))
        return
    print(f"cold start, process start -> first 2xx (median of {args.runs}; baseline hello-world)")
    print(f"{'function':<18}{'median s':>10}{'x hello':>10}{'RSS MiB':>10}")
    for name, row in rows.items():
        print(f"{name:<18}{row['median_s']:>10.3f}{row['ratio']:>10.2f}{row['rss_mib']:>10.1f}")


if __name__ == "__main__":
    main()
