"""Audio preprocessing throughput: the Flink preprocess job against plain numpy, same run.

Both sides run the same transform (``process_kafka_record``: CloudEvent parse, decode,
downmix, resample to 16 kHz, DC removal, loudness normalisation, features, WAV encode)
on the same clips. The job side reads them from a real Kafka broker started here and
writes to Kafka (exactly-once transactions, committed per checkpoint); the time runs
from the first send to the last committed output record of a batch, with the job warm.

    .venv/bin/python -m bench.flink_preprocess [--clips 200] [--seconds 2] [--repeats 3]

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
        stereo = np.stack([x, 0.8 * x], axis=1)
        buf = io.BytesIO()
        wavfile.write(buf, rate, (stereo * 32767).astype(np.int16))
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


def count_outputs(bootstrap: str, ids: set[str], timeout_s: float) -> float:
    """Wall time when the last of ``ids`` is readable (committed) on the output topic."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topics.preprocessed("audio"), bootstrap_servers=bootstrap,
                             group_id=None, auto_offset_reset="earliest",
                             isolation_level="read_committed", enable_auto_commit=False,
                             fetch_max_bytes=64 * 1024 * 1024)
    missing = set(ids)
    deadline = time.monotonic() + timeout_s
    try:
        while missing:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(missing)} outputs missing after {timeout_s}s")
            for recs in consumer.poll(timeout_ms=200).values():
                for r in recs:
                    ce_id = dict(r.headers).get("ce_id", b"").decode()
                    missing.discard(ce_id)
        return time.monotonic()
    finally:
        consumer.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=3)
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
        producer = bus.make_producer(settings, max_request_size=16 * 1024 * 1024)

        ready = settings.state_dir / "flink" / "ready.json"
        t0 = time.monotonic()
        app_proc = spawn(argv(settings, ready), log_path=work / "flink.log",
                         env={**settings_env(settings), "PYTHONPATH": str(PROJECT_ROOT)},
                         cwd=PROJECT_ROOT)
        wait_until(ready.exists, timeout_s=300, what="flink job",
                   alive=lambda: app_proc.poll() is None, log_path=work / "flink.log")
        submitted = time.monotonic() - t0
        warm = records(clips[:10], "warm")
        bus.publish(producer, topics.raw("audio"), warm)
        first_out = count_outputs(broker.bootstrap, {e.id for e in warm}, 300) - t0

        flink_rates, numpy_rates = [], []
        for r in range(args.repeats):
            evs = records(clips, f"run{r}")
            numpy_rates.append(numpy_rate(settings, evs, audio_s))
            start = time.monotonic()
            bus.publish(producer, topics.raw("audio"), evs)
            end = count_outputs(broker.bootstrap, {e.id for e in evs}, 600)
            flink_rates.append(audio_s / (end - start))
            print(f"repeat {r + 1}: numpy {numpy_rates[-1]:.1f} s/s, "
                  f"flink {flink_rates[-1]:.1f} s/s", flush=True)
        producer.close()
        f, n = statistics.median(flink_rates), statistics.median(numpy_rates)
        print(f"clips: {args.clips} x {args.seconds:g} s (44.1 kHz stereo int16 -> 16 kHz mono)")
        print(f"plain numpy:  {n:8.1f} s of audio per wall second (median of {args.repeats})")
        print(f"flink job:    {f:8.1f} s of audio per wall second (median of {args.repeats})")
        print(f"ratio flink/numpy: {f / n:.2f}")
        print(f"job start-up: submitted after {submitted:.1f} s, "
              f"first output after {first_out:.1f} s")
    finally:
        if app_proc is not None:
            stop_pid(app_proc.pid, timeout_s=10)
        stop_pid(kproc.pid, timeout_s=20)


if __name__ == "__main__":
    main()
