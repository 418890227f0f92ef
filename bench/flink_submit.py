"""A new job's first output after submission: the session cluster vs a mini-cluster.

Against a real local Kafka broker, raw images wait in the raw topic; the preprocess
pipeline is then submitted, the way the local stack submits it, to a running standalone
session cluster (one JobManager, one TaskManager started once, from the stack's component
specs). The clock starts when the job is submitted (the submitter writes its ready file
right after ``execute_async`` returns) and stops when the first preprocessed record is
readable (``read_committed``: output commits with the first checkpoint). Each run has its
own consumer group and checkpoint folder, so it starts from the topic's beginning, and is
cancelled through the REST API afterwards (a killed job's open Kafka transaction would hide
the next run's output from read_committed readers for up to 10 minutes). The baseline, in
the same run and interleaved, is the same job on its own mini-cluster
(``flink_target=local``), where submission also starts the cluster. Also printed: the
submitter's own time (process start to submission) and the whole time from process start
to first output.

    .venv/bin/python bench/flink_submit.py [--runs 3] [--images 20] [--out-json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from driftloop import bus, topics  # noqa: E402
from driftloop.local.components.flink import argv, cluster_components, settings_env  # noqa: E402
from driftloop.local.components.kafka import create_topics  # noqa: E402
from driftloop.local.kafka import KafkaBroker  # noqa: E402
from driftloop.local.process import (  # noqa: E402
    free_port,
    free_port_run,
    spawn,
    stop_pid,
    wait_until,
)
from driftloop.raw_samples import publish_samples  # noqa: E402
from driftloop.settings import Settings  # noqa: E402


def first_output_at(settings: Settings, since_offsets: dict[Any, int], timeout_s: float) -> float:
    """Wall-clock time the first new preprocessed record became readable."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        **bus.client_config(settings, "bench-flink-submit"),
        group_id=None,
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    parts = list(since_offsets)
    consumer.assign(parts)
    for tp, off in since_offsets.items():
        consumer.seek(tp, off)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if any(consumer.poll(timeout_ms=50).values()):
                return time.time()
    finally:
        consumer.close()
    raise TimeoutError(f"no output within {timeout_s:.0f} s")


def end_offsets(settings: Settings) -> dict[Any, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        **bus.client_config(settings, "bench-flink-submit-ends"),
        group_id=None,
        isolation_level="read_committed",
    )
    topic = topics.preprocessed("image")
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
    ends = consumer.end_offsets(parts)
    consumer.close()
    return dict(ends)


def _state(settings: Settings, job: str) -> str:
    url = f"http://127.0.0.1:{settings.flink_rest_port}/jobs/{job}"
    with urllib.request.urlopen(url, timeout=60) as r:
        return str(json.loads(r.read())["state"])


def run_once(base: Settings, target: str, folder: Path) -> dict[str, float]:
    run = uuid.uuid4().hex[:8]
    settings = base.model_copy(
        update={
            "flink_target": target,
            "flink_group_id": f"bench-{run}",
            "flink_checkpoint_dir": str(folder / f"cp-{run}"),
            "flink_rest_port": base.flink_rest_port if target == "session" else free_port(),
        }
    )
    ready = folder / f"ready-{run}.json"
    log = folder / f"app-{run}.log"
    since = end_offsets(settings)
    env = {**settings_env(settings), "PYTHONPATH": str(ROOT)}
    cmd = [*argv(settings.model_copy(update={"flink_pipelines": ("preprocess",)}), ready)]
    t_start = time.time()
    proc = spawn(cmd, log_path=log, env=env, cwd=ROOT)
    try:
        wait_until(
            ready.exists,
            timeout_s=300,
            what=f"{target} submission",
            alive=lambda: proc.poll() is None,
            log_path=log,
        )
        submitted = ready.stat().st_mtime
        first = first_output_at(settings, since, timeout_s=600)
        job = json.loads(ready.read_text())["job_id"]
        # Cancel (both targets): a killed job leaves its Kafka transaction open, and
        # read_committed readers see nothing behind it until it times out (10 min).
        req = urllib.request.Request(
            f"http://127.0.0.1:{settings.flink_rest_port}/jobs/{job}?mode=cancel",
            method="PATCH",
        )
        urllib.request.urlopen(req, timeout=60).close()
        wait_until(
            # A mini-cluster ends with its job: its process exits once the job is cancelled.
            lambda: proc.poll() is not None or _state(settings, job) == "CANCELED",
            timeout_s=120,
            what="the cancelled job to abort its transaction and release its slots",
        )
    finally:
        stop_pid(proc.pid, timeout_s=10)
    return {
        "submitter_s": submitted - t_start,
        "first_output_after_submit_s": first - submitted,
        "first_output_after_start_s": first - t_start,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--out-json", type=Path)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-flink-submit-"))
    defaults = Settings()
    broker = KafkaBroker(
        libs_dir=defaults.cache_dir / "kafka" / "libs",
        data_dir=folder / "kafka",
        port=free_port(),
        controller_port=free_port(),
        heap="384m",
    )
    broker.format_storage()
    procs = [spawn(broker.argv(), log_path=folder / "kafka.log")]
    try:
        kafka = procs[0]
        wait_until(
            broker.healthy,
            timeout_s=90,
            what="kafka",
            alive=lambda: kafka.poll() is None,
            log_path=folder / "kafka.log",
        )
        base = Settings(
            kafka_bootstrap=broker.bootstrap,
            state_dir=folder / "state",
            blob_url=(folder / "lake").as_uri(),
            flink_rest_port=free_port(),
            flink_jobmanager_rpc_port=free_port(),
            flink_metrics_port=free_port_run(4),
            flink_checkpoint_interval_ms=1000,
            s3_endpoint_url=None,
        )
        create_topics(base)
        publish_samples(base, audio=0, images=args.images, source="bench/flink-submit")
        t0 = time.monotonic()
        for spec in cluster_components(base.model_copy(update={"flink_target": "session"})):
            if spec.prepare is not None:
                spec.prepare()
            proc = spawn(
                spec.argv,
                log_path=folder / f"{spec.name}.log",
                env={**os.environ, **spec.env},
                cwd=spec.cwd,
            )
            procs.append(proc)
            wait_until(
                spec.health,
                timeout_s=180,
                what=spec.name,
                alive=lambda p=proc: p.poll() is None,
                log_path=folder / f"{spec.name}.log",
            )
        cluster_s = time.monotonic() - t0
        results: dict[str, list[dict[str, float]]] = {"session": [], "local": []}
        for _ in range(args.runs):
            for target in ("session", "local"):  # interleaved: same load for both
                results[target].append(run_once(base, target, folder))
                print(target, results[target][-1], flush=True)
    finally:
        for p in reversed(procs):
            stop_pid(p.pid, timeout_s=10)

    def med(target: str, key: str) -> float:
        return statistics.median(r[key] for r in results[target])

    summary = {
        "runs": args.runs,
        "cluster_start_s": round(cluster_s, 2),
        **{
            f"{t}_{k}_median": round(med(t, k), 2)
            for t in results
            for k in ("submitter_s", "first_output_after_submit_s", "first_output_after_start_s")
        },
    }
    summary["after_submit_ratio_session_vs_local"] = round(
        med("session", "first_output_after_submit_s") / med("local", "first_output_after_submit_s"),
        3,
    )
    summary["after_start_ratio_session_vs_local"] = round(
        med("session", "first_output_after_start_s") / med("local", "first_output_after_start_s"), 3
    )
    print(json.dumps(summary, indent=2))
    if args.out_json:
        args.out_json.write_text(json.dumps({"summary": summary, "runs": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
