"""Cold start of each function to its first event handled, against a hello-world function.

Every function in functions/ that has a main.py is started the way its container starts
(functions-framework with the func.yaml target) against a real local Kafka broker. Like
Knative's queue-proxy, the bench polls GET /healthz until it answers 2xx, then sends the
function's first request and waits for the answer: feedback-intake's 202 (Kafka
acknowledged the record), drift-check's first check, retrain-trigger's first decision,
promote's first answer. A hello-world functions-framework handler answering the same
request (bench/hello/main.py) is the baseline, started the same way in the same run
(starts interleaved, medians). RSS is read from /proc after the first answer.

    .venv/bin/python bench/cold_start.py [--runs 5] [--json] [--out-json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FF = str(Path(sys.executable).with_name("functions-framework"))

from driftloop import events as ev  # noqa: E402
from driftloop.local.components.kafka import create_topics  # noqa: E402
from driftloop.local.kafka import KafkaBroker  # noqa: E402
from driftloop.local.process import free_port, spawn, stop_pid, wait_until  # noqa: E402
from driftloop.monitoring import config as monitoring_config  # noqa: E402
from driftloop.settings import Settings  # noqa: E402

Request = tuple[dict[str, str], bytes]


def _binary(event: ev.Event) -> Request:
    return ev.to_http_binary(event)


def first_requests(run: int) -> dict[str, Callable[[], Request]]:
    """The first request each function gets (fresh ids per start, so none is a repeat)."""
    src = f"cold-start-{os.getpid()}-{run}"
    return {
        "feedback-intake": lambda: _binary(
            ev.new_event(
                ev.FEEDBACK,
                src,
                {"prediction_id": f"p{run}", "model": "digits", "truth": 3},
                id=f"{src}-fb",
            )
        ),
        "drift-check": lambda: (
            {"content-type": "application/json"},
            json.dumps(
                {
                    "model": "digits",  # a window of 200 predictions, inline
                    "window": {
                        "label": [i % 10 for i in range(200)],
                        "confidence": [0.5 + (i % 50) / 100 for i in range(200)],
                    },
                }
            ).encode(),
        ),
        "retrain-trigger": lambda: _binary(
            ev.new_event(
                ev.DRIFT_DETECTED,
                src,
                {"model": "digits", "version": "1", "share_drifted": 0.1, "dataset_drift": False},
                id=f"{src}-drift",
                datacontenttype=ev.JSON,
                model="digits",
            )
        ),
        "promote": lambda: _binary(
            ev.new_event(
                ev.MODEL_TRAINED,
                src,
                {"model": "digits", "version": "1", "run_id": f"r{run}"},
                id=f"{src}-trained",
                datacontenttype=ev.JSON,
                model="digits",
            )
        ),
    }


def seed_registry(settings: Settings) -> None:
    """digits v1 as champion with its reference profile in the run's blob store (as the
    demo seeds it), so drift-check checks it and promote judges a version that exists."""
    from driftloop.blob import open_store
    from driftloop.registry import Registry
    from driftloop.retrain.pipeline import _save_profile
    from driftloop.retrain.trainers import trainer_for
    from driftloop.serving.bootstrap import ensure_models

    store = open_store(settings.resolved_blob_url, settings)
    registry = Registry(store)
    ensure_models(registry, ["digits"])
    trainer = trainer_for("digits")
    _save_profile(
        store, trainer, "digits", "1", registry.artifact("digits", "1"), trainer.base()[1]
    )


def _rss_mib(pid: int) -> float:
    """RSS of the largest process in ``pid``'s tree: gunicorn's worker, which handles the
    requests (the arbiter that forked it stays small)."""

    def tree(p: int) -> list[int]:
        kids: list[int] = []
        for task in Path(f"/proc/{p}/task").glob("*"):
            text = (task / "children").read_text().split()
            kids.extend(int(k) for k in text)
        return [p, *(q for k in kids for q in tree(k))]

    best = 0.0
    for p in tree(pid):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                best = max(best, int(line.split()[1]) / 1024)
    return best


def cold_start(
    source: Path, target: str, env: dict[str, str], request: Request
) -> dict[str, float]:
    """Seconds from spawn to the first 2xx on /healthz and to the first request's answer,
    the answer's status, and RSS (MiB) right after it."""
    port = free_port()
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
        with httpx.Client(timeout=30.0, base_url=f"http://127.0.0.1:{port}") as client:
            while True:
                if proc.poll() is not None:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise RuntimeError(f"{source} exited: {err[-500:]}")
                try:
                    if 200 <= client.get("/healthz", timeout=1.0).status_code < 300:
                        break
                except httpx.TransportError:
                    pass
                if time.perf_counter() - t0 > 60:
                    raise RuntimeError(f"{source}: no 2xx within 60 s")
                time.sleep(0.005)
            ready = time.perf_counter() - t0
            headers, body = request
            r = client.post("/", headers=headers, content=body)
            first = time.perf_counter() - t0
            if os.environ.get("COLD_START_DEBUG"):
                print(source.parent.name, r.status_code, r.text[:300], file=sys.stderr)
            if r.status_code >= 500:
                raise RuntimeError(f"{source}: first request answered {r.status_code}: {r.text}")
            return {
                "ready_s": ready,
                "first_s": first,
                "status": r.status_code,
                "rss_mib": _rss_mib(proc.pid),
            }
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--out-json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="driftloop-cold-"))
    broker = KafkaBroker(
        libs_dir=Settings().cache_dir / "kafka" / "libs",
        data_dir=tmp / "kafka",
        port=free_port(),
        controller_port=free_port(),
    )
    broker.format_storage()
    kproc = spawn(broker.argv(), log_path=tmp / "kafka.log")
    pids = [kproc.pid]
    try:
        wait_until(broker.healthy, timeout_s=90, what="kafka", log_path=tmp / "kafka.log")
        push_port = free_port()  # drift-check pushes each check's gauges here
        files = monitoring_config.write_configs(
            Settings(state_dir=tmp / "state", pushgateway_port=push_port), tmp / "monitoring"
        )
        push = spawn(
            monitoring_config.pushgateway_argv(files, push_port), log_path=tmp / "pushgateway.log"
        )
        pids.append(push.pid)
        push_url = f"http://127.0.0.1:{push_port}"
        wait_until(
            lambda: httpx.get(f"{push_url}/-/ready").status_code == 200,
            timeout_s=30,
            what="pushgateway",
            log_path=tmp / "pushgateway.log",
        )
        own = {
            "DRIFTLOOP_KAFKA_BOOTSTRAP": broker.bootstrap,
            "DRIFTLOOP_PUSHGATEWAY_URL": push_url,
            "DRIFTLOOP_STATE_DIR": str(tmp / "state"),
            # nothing serves or scrapes here: promote's evidence is refused at once
            "DRIFTLOOP_SERVING_URL": "http://127.0.0.1:9",
            "DRIFTLOOP_PROMETHEUS_URL": "http://127.0.0.1:9",
        }
        settings = Settings.from_env(own)
        create_topics(settings)
        seed_registry(settings)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DRIFTLOOP_")},
            **own,
            "PYTHONPATH": str(ROOT),
        }
        subjects = functions()
        names = [n for n, _, _ in subjects]
        rows: dict[str, list[dict[str, float]]] = {n: [] for n in names}
        hello: dict[str, list[dict[str, float]]] = {n: [] for n in names}
        for run in range(args.runs):  # interleaved: machine load hits every subject alike
            requests = first_requests(run)
            for name, source, target in subjects:
                req = requests[name]()
                hello[name].append(cold_start(ROOT / "bench/hello/main.py", "hello", env, req))
                rows[name].append(cold_start(source, target, env, req))
    finally:
        for pid in reversed(pids):
            stop_pid(pid)

    def med(xs: list[dict[str, float]], key: str) -> float:
        return statistics.median(x[key] for x in xs)

    out = {}
    for name in names:
        base = med(hello[name], "first_s")
        out[name] = {
            "ready_s": round(med(rows[name], "ready_s"), 3),
            "first_event_s": round(med(rows[name], "first_s"), 3),
            "hello_first_event_s": round(base, 3),
            "ratio": round(med(rows[name], "first_s") / base, 2),
            "rss_mib": round(med(rows[name], "rss_mib"), 1),
            "hello_rss_mib": round(med(hello[name], "rss_mib"), 1),
            "status": int(statistics.mode(x["status"] for x in rows[name])),
        }
    doc = {
        "bench": "cold_start",
        "runs": args.runs,
        "load_1m": os.getloadavg()[0],
        "functions": out,
    }
    if args.out_json:
        Path(args.out_json).write_text(json.dumps(doc, indent=1))
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    print(
        f"cold start, process start -> first event answered (median of {args.runs}; "
        "baseline: hello-world answering the same request)"
    )
    print(
        f"{'function':<17}{'ready s':>9}{'first s':>9}{'hello s':>9}{'x hello':>9}"
        f"{'RSS MiB':>9}{'status':>8}"
    )
    for name, row in out.items():
        print(
            f"{name:<17}{row['ready_s']:>9.3f}{row['first_event_s']:>9.3f}"
            f"{row['hello_first_event_s']:>9.3f}{row['ratio']:>9.2f}{row['rss_mib']:>9.1f}"
            f"{row['status']:>8}"
        )


if __name__ == "__main__":
    main()
