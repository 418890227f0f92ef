"""feedback-intake throughput and latency against a do-nothing functions-framework handler.

Both run under functions-framework with the same server settings on this machine; the
intake waits for Kafka's acks=all on a real local broker. The load generator uses
keep-alive connections from worker processes. Each figure is the median of several
alternating rounds; the ratio is intake over baseline, so noise on the shared machine
hits both sides alike.

    .venv/bin/python bench/intake.py [--seconds 5] [--rounds 3] [--connections 8]
        [--compare-client kafka-python] [--out-json FILE]
The intake runs on the default producer client (Settings.kafka_producer_client); a second
intake on ``--compare-client`` is measured in the same rounds, so the two clients compare
under the same load.
The CPU seconds the intake (all its processes) and the broker spent during the intake
rounds give events per core-second, the figure the capacity plan (bench/capacity.py) uses.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.proc_cpu import tree_cpu_s  # noqa: E402
from driftloop import events as ev  # noqa: E402
from driftloop.local.components.kafka import create_topics  # noqa: E402
from driftloop.local.kafka import KafkaBroker  # noqa: E402
from driftloop.local.process import free_port, spawn, stop_pid, wait_until  # noqa: E402
from driftloop.settings import Settings  # noqa: E402


def serve(target: str, source: Path, env: dict[str, str], log: Path) -> tuple[int, int]:
    port = free_port()
    argv = [
        str(Path(sys.executable).parent / "functions-framework"),
        "--target",
        target,
        "--source",
        str(source),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    proc = spawn(argv, log_path=log, env=env, cwd=ROOT)

    def ready() -> bool:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        c.request("GET", "/healthz")
        return c.getresponse().status < 500

    wait_until(ready, timeout_s=30, what=target, alive=lambda: proc.poll() is None, log_path=log)
    return port, proc.pid


def _worker(port: int, seconds: float, batch: int, out: mp.Queue) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    lat: list[float] = []
    n = 0
    src = f"bench-{uuid.uuid4().hex[:8]}"
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        if batch == 1:
            e = ev.new_event(
                ev.FEEDBACK,
                src,
                {"prediction_id": f"p{n}", "model": "digits", "truth": n % 10},
                id=f"{src}-{n}",
            )
            headers, body = ev.to_http_binary(e)
        else:
            evs = [
                ev.new_event(
                    ev.FEEDBACK,
                    src,
                    {"prediction_id": f"p{n}-{i}", "model": "digits", "truth": i % 10},
                    id=f"{src}-{n}-{i}",
                )
                for i in range(batch)
            ]
            headers = {"content-type": ev.BATCH}
            body = json.dumps([ev.to_structured(x) for x in evs]).encode()
        t0 = time.perf_counter()
        conn.request("POST", "/", body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        lat.append(time.perf_counter() - t0)
        if resp.status != 202:
            raise SystemExit(f"unexpected status {resp.status}")
        n += 1
    out.put((n * batch, lat))


def load(port: int, seconds: float, connections: int, batch: int = 1) -> dict[str, float]:
    q: mp.Queue = mp.Queue()
    procs = [mp.Process(target=_worker, args=(port, seconds, batch, q)) for _ in range(connections)]
    started = time.perf_counter()
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    wall = time.perf_counter() - started
    lat = sorted(x for _, ls in results for x in ls)
    return {
        "events_per_s": sum(n for n, _ in results) / min(wall, seconds + 1),
        "p50_ms": lat[len(lat) // 2] * 1000,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument(
        "--compare-client",
        default="kafka-python",
        help="also run an intake on this producer client (empty: none), to "
        "compare with the default client in the same run",
    )
    ap.add_argument("--out-json", help="also write the figures to this JSON file")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="driftloop-bench-"))
    settings = Settings()
    broker = KafkaBroker(
        libs_dir=settings.cache_dir / "kafka" / "libs",
        data_dir=tmp / "kafka",
        port=free_port(),
        controller_port=free_port(),
    )
    broker.format_storage()
    kproc = spawn(broker.argv(), log_path=tmp / "kafka.log")
    pids = [kproc.pid]
    try:
        wait_until(broker.healthy, timeout_s=90, what="kafka", log_path=tmp / "kafka.log")
        create_topics(Settings(kafka_bootstrap=broker.bootstrap))
        env = {"DRIFTLOOP_KAFKA_BOOTSTRAP": broker.bootstrap}
        intake_port, intake_pid = serve(
            "intake", ROOT / "functions/feedback-intake/main.py", env, tmp / "intake.log"
        )
        pids.append(intake_pid)
        hello_port, pid = serve("hello", ROOT / "bench/hello/main.py", env, tmp / "hello.log")
        pids.append(pid)
        default_client = Settings().kafka_producer_client
        other = args.compare_client if args.compare_client != default_client else ""
        if other:
            other_port, other_pid = serve(
                "intake",
                ROOT / "functions/feedback-intake/main.py",
                {**env, "DRIFTLOOP_KAFKA_PRODUCER_CLIENT": other},
                tmp / "intake-other.log",
            )
            pids.append(other_pid)
            load(other_port, 1.0, 2)
        load(intake_port, 1.0, 2)  # warm up the producer and the connections
        load(hello_port, 1.0, 2)
        rows: dict[str, list[dict[str, float]]] = {"hello": [], "intake": [], "batch": []}
        if other:
            rows |= {f"intake[{other}]": [], f"batch[{other}]": []}
        # The broker burns CPU when idle too (controller, log cleaner, GC); at the low rates a
        # shared machine reaches that would dominate, so the idle rate is subtracted.
        idle0 = tree_cpu_s(kproc.pid)
        time.sleep(args.seconds)
        kafka_idle_per_s = (tree_cpu_s(kproc.pid) - idle0) / args.seconds
        cpu = {k: {"intake": 0.0, "kafka": 0.0, "events": 0.0} for k in ("intake", "batch")}
        other_cpu = {k: {"intake": 0.0, "events": 0.0} for k in ("intake", "batch")}
        for _ in range(args.rounds):
            rows["hello"].append(load(hello_port, args.seconds, args.connections))
            for kind, batch in (("intake", 1), ("batch", args.batch_size)):
                before = tree_cpu_s(intake_pid), tree_cpu_s(kproc.pid)
                r = load(intake_port, args.seconds, args.connections, batch=batch)
                rows[kind].append(r)
                cpu[kind]["intake"] += tree_cpu_s(intake_pid) - before[0]
                cpu[kind]["kafka"] += max(
                    0.0, tree_cpu_s(kproc.pid) - before[1] - kafka_idle_per_s * args.seconds
                )
                cpu[kind]["events"] += r["events_per_s"] * args.seconds
            if other:
                for kind, batch in (("intake", 1), ("batch", args.batch_size)):
                    c0 = tree_cpu_s(other_pid)
                    r = load(other_port, args.seconds, args.connections, batch=batch)
                    rows[f"{kind}[{other}]"].append(r)
                    other_cpu[kind]["intake"] += tree_cpu_s(other_pid) - c0
                    other_cpu[kind]["events"] += r["events_per_s"] * args.seconds
        med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in rows.items()}
        h, i, b = med["hello"], med["intake"], med["batch"]
        print(
            f"medians of {args.rounds} rounds x {args.seconds:.0f}s, "
            f"{args.connections} keep-alive connections, 2 cores shared with the load generator"
        )
        print(f"{'':28}{'events/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
        print(
            f"{'hello-world handler':28}{h['events_per_s']:10.0f}{h['p50_ms']:9.2f}"
            f"{h['p99_ms']:9.2f}"
        )
        print(
            f"{'feedback-intake (binary)':28}{i['events_per_s']:10.0f}{i['p50_ms']:9.2f}"
            f"{i['p99_ms']:9.2f}"
        )
        print(
            f"{'feedback-intake (batch ' + str(args.batch_size) + ')':28}"
            f"{b['events_per_s']:10.0f}{b['p50_ms']:9.2f}{b['p99_ms']:9.2f}"
        )
        print(
            f"ratio intake/hello: throughput {i['events_per_s'] / h['events_per_s']:.2f}x, "
            f"p50 {i['p50_ms'] / h['p50_ms']:.2f}x, p99 {i['p99_ms'] / h['p99_ms']:.2f}x"
        )
        print(f"ratio batch/hello events/s: {b['events_per_s'] / h['events_per_s']:.2f}x")
        if other:
            oi, ob = med[f"intake[{other}]"], med[f"batch[{other}]"]
            print(
                f"{'intake (binary) on ' + other:28}{oi['events_per_s']:10.0f}"
                f"{oi['p50_ms']:9.2f}{oi['p99_ms']:9.2f}"
            )
            print(
                f"{'intake (batch) on ' + other:28}{ob['events_per_s']:10.0f}"
                f"{ob['p50_ms']:9.2f}{ob['p99_ms']:9.2f}"
            )
            print(
                f"ratio {default_client}/{other}: binary events/s "
                f"{i['events_per_s'] / oi['events_per_s']:.2f}x, p50 "
                f"{i['p50_ms'] / oi['p50_ms']:.2f}x; batch events/s "
                f"{b['events_per_s'] / ob['events_per_s']:.2f}x"
            )
        per_core = {
            k: {
                "intake_events_per_core_s": c["events"] / max(c["intake"], 1e-9),
                "kafka_events_per_core_s": c["events"] / max(c["kafka"], 1e-9),
            }
            for k, c in cpu.items()
        }
        if other:
            for k, c in other_cpu.items():
                mine = per_core[k]["intake_events_per_core_s"]
                theirs = c["events"] / max(c["intake"], 1e-9)
                per_core[k][f"intake_events_per_core_s[{other}]"] = theirs
                print(
                    f"{k} on {other}: {theirs:.0f} events per intake core-second "
                    f"({default_client} {mine / max(theirs, 1e-9):.2f}x)"
                )
        for k, v in per_core.items():
            print(
                f"{k}: {v['intake_events_per_core_s']:.0f} events per intake core-second, "
                f"{v['kafka_events_per_core_s']:.0f} per broker core-second"
            )
        if args.out_json:
            Path(args.out_json).write_text(
                json.dumps(
                    {
                        "bench": "intake",
                        "load_1m": os.getloadavg()[0],
                        "cpus": os.cpu_count(),
                        "client": default_client,
                        "compared_client": other or None,
                        "args": vars(args),
                        "medians": med,
                        "per_core": per_core,
                        "kafka_idle_cores": kafka_idle_per_s,
                    },
                    indent=1,
                )
            )
    finally:
        for pid in reversed(pids):
            stop_pid(pid)


if __name__ == "__main__":
    main()
