"""Audio preprocessing throughput: the Flink preprocess job against plain numpy, same run.

Both sides run the same transform (``process_kafka_record``: CloudEvent parse, decode,
downmix, resample to 16 kHz, DC removal, loudness normalisation, features, WAV encode)
on the same clips. The job side reads them from a real Kafka broker started here, where
they are loaded before the job starts (so the producer never starves the job), and
writes to Kafka (exactly-once transactions, committed per checkpoint). Each repeat's rate
is measured on the output side: clips committed after the repeat's first commit, over the
time from that commit to its last one.

    .venv/bin/python -m bench.flink_preprocess [--clips 200] [--seconds 2] [--repeats 3]
        [--out-json FILE]

Prints seconds of audio per wall second for both, their ratio (median of the repeats)
and the job's start-up time (spawn → submitted, and → first output record).
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.io import wavfile

from driftloop import bus, events, topics
from driftloop.local.components.flink import argv, settings_env
from driftloop.local.components.kafka import create_topics
from driftloop.local.kafka import KafkaBroker
from driftloop.local.process import free_port, spawn, stop_pid, wait_until
from driftloop.settings import PROJECT_ROOT, Settings
from flink.jobs.preprocess import preprocess_config
from flink.transforms.records import process_kafka_record


def make_clips(n: int, seconds: float, rate: int = 44100) -> list[bytes]:
    rng = np.random.default_rng(0)
    t = np.arange(int(rate * seconds)) / rate
    clips = []
    for i in range(n):
        x = 0.2 * np.sin(2 * np.pi * (200 + i) * t) + rng.normal(0, 0.02, t.size)
        buf = io.BytesIO()
        wavfile.write(buf, rate, (x * 32767).astype(np.int16))
        clips.append(buf.getvalue())
    return clips


def records(clips: list[bytes], tag: str) -> list[events.Event]:
    return [events.new_event(events.INPUT, "bench", c, id=f"{tag}-{i}",
                             datacontenttype="audio/wav", model="speech")
            for i, c in enumerate(clips)]


def numpy_rate(settings: Settings, evs: list[events.Event], audio_s: float) -> float:
    cfg = preprocess_config(settings)
    encoded = [events.to_kafka(e, key="speech") for e in evs]
    t0 = time.perf_counter()
    for rec in encoded:
        out = process_kafka_record(
            rec.value, rec.headers, modality="audio", source_topic="raw",
            output_topic="out", deadletter_topic="dl", cfg=cfg)
        assert out.reason is None
    return audio_s / (time.perf_counter() - t0)


def watch_outputs(bootstrap: str, groups: dict[str, set[str]], timeout_s: float
                  ) -> dict[str, list[tuple[float, int]]]:
    """Per group of ids: (wall time, how many of its ids were new) for each poll that had some."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topics.preprocessed("audio"), bootstrap_servers=bootstrap,
                             group_id=None, auto_offset_reset="earliest",
                             isolation_level="read_committed", enable_auto_commit=False,
                             fetch_max_bytes=64 * 1024 * 1024)
    missing = {g: set(ids) for g, ids in groups.items()}
    seen: dict[str, list[tuple[float, int]]] = {g: [] for g in groups}
    deadline = time.monotonic() + timeout_s
    try:
        while any(missing.values()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"outputs missing after {timeout_s}s")
            batch = consumer.poll(timeout_ms=100)
            now = time.monotonic()
            new: dict[str, int] = {}
            for recs in batch.values():
                for r in recs:
                    ce_id = dict(r.headers).get("ce_id", b"").decode()
                    g = ce_id.split("-", 1)[0]
                    if g in missing and ce_id in missing[g]:
                        missing[g].discard(ce_id)
                        new[g] = new.get(g, 0) + 1
            for g, n in new.items():
                seen[g].append((now, n))
        return seen
    finally:
        consumer.close()


def rate_of(arrivals: list[tuple[float, int]], clip_s: float) -> float:
    """Clips committed after the first commit, over the time since that commit."""
    (t_first, _), (t_last, _) = arrivals[0], arrivals[-1]
    after = sum(n for _, n in arrivals[1:])
    return after * clip_s / (t_last - t_first)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clips", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out-json", help="also write the figures to this JSON file")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-flink-"))
    broker = KafkaBroker(libs_dir=Settings().cache_dir / "kafka" / "libs",
                         data_dir=work / "kafka", port=free_port(),
                         controller_port=free_port(), heap="512m")
    broker.format_storage()
    kproc = spawn(broker.argv(), log_path=work / "kafka.log")
    app_proc = None
    try:
        wait_until(broker.healthy, timeout_s=90, what="kafka")
        settings = Settings(kafka_bootstrap=broker.bootstrap, state_dir=work / "state",
                            flink_pipelines="preprocess", topic_partitions=1,
                            flink_checkpoint_interval_ms=500, flink_bundle_time_ms=50,
                            flink_inline_max_bytes=1 << 20)
        create_topics(settings)
        clips = make_clips(args.clips, args.seconds)
        audio_s = args.clips * args.seconds
        producer = bus.make_producer(settings, max_request_size=16 * 1024 * 1024,
                                     delivery_timeout_ms=600_000, request_timeout_ms=120_000)
        runs = {f"run{r}": records(clips, f"run{r}") for r in range(args.repeats)}
        warm = records(clips[:10], "warm")
        for evs in [warm, *runs.values()]:  # loaded before the job starts: a backlog
            for i in range(0, len(evs), 20):
                bus.publish(producer, topics.raw("audio"), evs[i:i + 20], timeout_s=600)

        ready = settings.state_dir / "flink" / "ready.json"
        t0 = time.monotonic()
        app_proc = spawn(argv(settings, ready), log_path=work / "flink.log",
                         env={**settings_env(settings), "PYTHONPATH": str(PROJECT_ROOT)},
                         cwd=PROJECT_ROOT)
        wait_until(ready.exists, timeout_s=300, what="flink job",
                   alive=lambda: app_proc.poll() is None, log_path=work / "flink.log")
        submitted = time.monotonic() - t0
        groups = {"warm": {e.id for e in warm}} | {g: {e.id for e in evs}
                                                   for g, evs in runs.items()}
        seen = watch_outputs(broker.bootstrap, groups, 900)
        first_out = seen["warm"][0][0] - t0

        flink_rates = [rate_of(seen[g], args.seconds) for g in runs]
        numpy_rates = [numpy_rate(settings, evs, audio_s) for evs in runs.values()]
        for r, (f_rate, n_rate) in enumerate(zip(flink_rates, numpy_rates, strict=True)):
            print(f"repeat {r + 1}: numpy {n_rate:.1f} s/s, flink {f_rate:.1f} s/s", flush=True)
        producer.close()
        f, n = statistics.median(flink_rates), statistics.median(numpy_rates)
        print(f"clips: {args.clips} x {args.seconds:g} s (44.1 kHz int16 -> 16 kHz)")
        print(f"plain numpy:  {n:8.1f} s of audio per wall second (median of {args.repeats})")
        print(f"flink job:    {f:8.1f} s of audio per wall second (median of {args.repeats})")
        print(f"ratio flink/numpy: {f / n:.2f}")
        print(f"job start-up: submitted after {submitted:.1f} s, "
              f"first output after {first_out:.1f} s")
        if args.out_json:
            import json
            import os

            # parallelism 1: one task slot, about one core for the Python transform
            Path(args.out_json).write_text(json.dumps({
                "bench": "flink_preprocess", "load_1m": os.getloadavg()[0],
                "cpus": os.cpu_count(), "args": vars(args), "parallelism": 1,
                "audio_s_per_s": f, "numpy_audio_s_per_s": n,
                "clips_per_s": f / args.seconds, "clips_per_core_s": f / args.seconds,
                "startup_s": submitted, "first_output_s": first_out}, indent=1))
    finally:
        if app_proc is not None:
            stop_pid(app_proc.pid, timeout_s=10)
        stop_pid(kproc.pid, timeout_s=20)


if __name__ == "__main__":
    main()
