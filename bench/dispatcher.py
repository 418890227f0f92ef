"""The local dispatcher's events/s on one route against a plain consume-and-POST loop.

A real Kafka broker on loopback holds N CloudEvents (binary mode, keys spread over the
topic's partitions). The sink is a functions-framework handler that answers 200 and
counts arrivals, served like the functions are. Each round:

(0) sink alone: one prepared request POSTed N times over one keep-alive connection, no
    Kafka: the ceiling the sink's framework sets on this machine;
(a) baseline: one KafkaConsumer reads the topic and POSTs each record (its ``ce_*``
    headers as ``ce-*``) over one keep-alive connection, nothing else;
(b) dispatcher: a ``RouteWorker`` of ``driftloop.local.eventing`` delivers the same
    records on one route (fresh consumer group): CloudEvents validation, per-partition
    order, retries, offsets committed after delivery.

events/s is (arrivals - 1) / (last arrival - first arrival) at the sink, so consumer
start-up is left out of both. Figures are medians of alternating rounds; the ratio is
dispatcher over baseline, measured in the same run. The CPU seconds of the consuming
process give events per core-second, the figure the capacity plan (bench/capacity.py)
uses for event routing.

    .venv/bin/python bench/dispatcher.py [--events 5000] [--rounds 3] [--partitions N]
        [--out-json FILE]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.intake import serve  # noqa: E402
from driftloop import bus  # noqa: E402
from driftloop import events as ev  # noqa: E402
from driftloop.local.eventing.manifests import Delivery, Route  # noqa: E402
from driftloop.local.eventing.worker import RouteWorker  # noqa: E402
from driftloop.local.kafka import KafkaBroker  # noqa: E402
from driftloop.local.process import free_port, spawn, stop_pid, wait_until  # noqa: E402
from driftloop.settings import Settings  # noqa: E402


def sink_stats(port: int, reset: bool = False) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST" if reset else "GET", "/_stats")
    stats: dict[str, float] = json.loads(conn.getresponse().read())
    conn.close()
    return stats


def wait_for_sink(port: int, n: int, timeout_s: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout_s
    while True:
        stats = sink_stats(port)
        if stats["n"] >= n:
            return stats
        if time.monotonic() > deadline:
            raise SystemExit(f"the sink saw {stats['n']:.0f} of {n} events in {timeout_s}s")
        time.sleep(0.05)


def rate(stats: dict[str, float]) -> float:
    return (stats["n"] - 1) / max(stats["last"] - stats["first"], 1e-9)


def produce(settings: Settings, topic: str, n: int) -> None:
    producer = bus.make_producer(settings)
    try:
        for i in range(n):
            e = ev.new_event(
                ev.FEEDBACK,
                "/bench",
                {"prediction_id": f"p{i}", "model": "digits", "truth": i % 10},
            )
            bus.send_event(producer, topic, e, key=f"k{i % 64}")
        producer.flush(60)
    finally:
        producer.close(timeout=10)


def sink_alone(n: int, port: int) -> None:
    """The sink's own ceiling: the same request POSTed n times, no Kafka."""
    e = ev.new_event(ev.FEEDBACK, "/bench", {"prediction_id": "p0", "model": "digits", "truth": 1})
    headers, body = ev.to_http_binary(e)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for _ in range(n):
            conn.request("POST", "/", body=body, headers=headers)
            conn.getresponse().read()
    finally:
        conn.close()


def baseline(settings: Settings, topic: str, n: int, port: int) -> None:
    """A plain loop: consume, POST each record over one keep-alive connection."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        max_poll_records=500,
    )
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        sent = 0
        while sent < n:
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    headers = {
                        (f"ce-{k[3:]}" if k.startswith("ce_") else k): (v or b"").decode()
                        for k, v in r.headers
                    }
                    conn.request("POST", "/", body=r.value, headers=headers)
                    resp = conn.getresponse()
                    resp.read()
                    if resp.status != 200:
                        raise SystemExit(f"sink answered {resp.status}")
                    sent += 1
    finally:
        conn.close()
        consumer.close()


def dispatcher(settings: Settings, topic: str, n: int, port: int, producer: Any) -> None:
    """One route consumer of the dispatcher, as ``driftloop up`` runs it."""
    route = Route(
        name="bench",
        topics=(topic,),
        group=f"bench-{uuid.uuid4().hex[:8]}",
        sink="sink",
        delivery=Delivery(retry=3),
        initial_offset="earliest",
    )
    stop = threading.Event()
    worker = RouteWorker(route, f"http://127.0.0.1:{port}/", settings, producer, {}, stop)
    worker.start()
    try:
        deadline = time.monotonic() + max(120.0, n / 20)
        while worker.delivered < n:
            if not worker.is_alive() or time.monotonic() > deadline:
                raise SystemExit(
                    f"the dispatcher delivered {worker.delivered} of {n}: {worker.last_error}"
                )
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="partitions of the topic (default: the stack's topic_partitions)",
    )
    ap.add_argument("--out-json", help="also write the figures to this JSON file")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="driftloop-bench-"))
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
        settings = Settings(kafka_bootstrap=broker.bootstrap, state_dir=tmp / "state")
        partitions = args.partitions or settings.topic_partitions
        topic = f"bench.dispatch.{uuid.uuid4().hex[:8]}"
        bus.ensure_topics(settings, [topic], partitions=partitions)
        port, pid = serve("sink", ROOT / "bench/sink/main.py", {}, tmp / "sink.log")
        pids.append(pid)
        produce(settings, topic, args.events)
        producer = bus.make_producer(settings)
        rows: dict[str, list[float]] = {"sink": [], "baseline": [], "dispatcher": []}
        cpu = {"sink": 0.0, "baseline": 0.0, "dispatcher": 0.0}
        try:
            for _ in range(args.rounds):
                for kind in ("sink", "baseline", "dispatcher"):
                    sink_stats(port, reset=True)
                    cpu0 = time.process_time()  # this process: the loop or the worker
                    if kind == "sink":
                        sink_alone(args.events, port)
                    elif kind == "baseline":
                        baseline(settings, topic, args.events, port)
                    else:
                        dispatcher(settings, topic, args.events, port, producer)
                    cpu[kind] += time.process_time() - cpu0
                    stats = wait_for_sink(port, args.events, 30)
                    rows[kind].append(rate(stats))
                    print(f"  {kind:10} {rows[kind][-1]:8.0f} events/s", flush=True)
        finally:
            producer.close(timeout=5)
        med = {k: statistics.median(v) for k, v in rows.items()}
        ratio = med["dispatcher"] / med["baseline"]
        print(
            f"medians of {args.rounds} rounds, {args.events} events on one route, "
            f"{partitions} partitions, broker + sink + dispatcher on this machine"
        )
        print(f"{'sink alone (same request POSTed, no Kafka)':44}{med['sink']:8.0f} events/s")
        print(f"{'baseline (consume + POST, one connection)':44}{med['baseline']:8.0f} events/s")
        print(f"{'dispatcher (one route)':44}{med['dispatcher']:8.0f} events/s")
        print(
            f"ratio dispatcher/baseline: {ratio:.2f}x, "
            f"dispatcher/sink alone: {med['dispatcher'] / med['sink']:.2f}x"
        )
        per_core = {
            f"{k}_events_per_core_s": args.events * args.rounds / max(c, 1e-9)
            for k, c in cpu.items()
        }
        print(
            f"CPU of the consuming process: baseline "
            f"{per_core['baseline_events_per_core_s']:,.0f} events per core-second, "
            f"dispatcher {per_core['dispatcher_events_per_core_s']:,.0f}"
        )
        if args.out_json:
            Path(args.out_json).write_text(
                json.dumps(
                    {
                        "bench": "dispatcher",
                        "load_1m": os.getloadavg()[0],
                        "cpus": os.cpu_count(),
                        "args": vars(args),
                        "partitions": partitions,
                        "rounds": rows,
                        "medians": med,
                        "ratio": ratio,
                        "per_core": per_core,
                    },
                    indent=1,
                )
            )
    finally:
        for pid in reversed(pids):
            stop_pid(pid)


if __name__ == "__main__":
    main()
