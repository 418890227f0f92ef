"""Preprocess throughput: the Flink preprocess job against the plain per-item loop, same run.

Both sides run the same transform (``process_kafka_record``: CloudEvent parse, read the
bytes (inline, or from the blob store when the input travels by ``dataref``), decode,
audio: downmix, resample to 16 kHz, DC removal, loudness, WAV encode; images: decode,
letterbox, PNG encode; features; with ``--offload-above``, the write of each output
payload above that base64 size to the blob store) on the same inputs. The job side reads
them from a real Kafka broker started here and writes to Kafka (exactly-once
transactions, committed per checkpoint). The warm-up items are loaded before the job starts;
once the job has worked through them (its output quiet for a few checkpoints), each repeat
is published in one transaction, so the job sees it whole, a backlog (the producer never
starves the job), and alone (a subtask reading several partitions reads them at paces of
its own: repeats loaded together would interleave). Each repeat's rate is measured on the
output side, by the output records' Kafka timestamps (when the job's producer sent them;
a watcher reading committed records in bursts, or late, does not skew them): items after
the repeat's first record over the time from it to its last. CPU seconds per item (the
job's process tree, sampled in the background and read at those times; the loop's process
time) are printed too: they hold on a loaded machine, where wall-clock rates of both sides swing.

    .venv/bin/python -m bench.flink_preprocess [--modality audio,image]
        [--parallelism 1,2] [--items 200] [--seconds 2] [--repeats 3] [--warmup 60]
        [--by-ref-above BYTES] [--offload-above BYTES] [--execution-mode thread|process]
        [--bundle-size N] [--bundle-time-ms MS] [--operator-chaining on|off]
        [--out-json FILE]

Prints, per modality and parallelism: items (audio: seconds of audio) per wall second of
both, their ratio (median of the repeats), CPU ms per item, and the job's start-up time
(spawn → submitted, and → first output record).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.io import wavfile

from bench.proc_cpu import tree_cpu_s
from driftloop import bus, topics
from driftloop import events as ev
from driftloop.blob import open_store
from driftloop.local.components.flink import argv, settings_env
from driftloop.local.components.kafka import create_topics
from driftloop.local.kafka import KafkaBroker
from driftloop.local.process import free_port, spawn, stop_pid, wait_until
from driftloop.settings import PROJECT_ROOT, Settings
from flink.jobs.preprocess import blob_refs, blob_writes, preprocess_config
from flink.transforms.dataref import EXTENSION, dataref_for
from flink.transforms.records import process_kafka_record

MODEL = {"audio": "speech", "image": "ocr"}
GOALS = {1: 0.7, 2: 1.0}
"""Job rate over the plain loop's, by parallelism."""


def make_clips(n: int, seconds: float, rate: int = 44100) -> list[tuple[bytes, str]]:
    """Stereo-free 16-bit WAV tones with noise at 44.1 kHz (176 KB for 2 s)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(rate * seconds)) / rate
    clips = []
    for i in range(n):
        x = 0.2 * np.sin(2 * np.pi * (200 + i) * t) + rng.normal(0, 0.02, t.size)
        buf = io.BytesIO()
        wavfile.write(buf, rate, (x * 32767).astype(np.int16))
        clips.append((buf.getvalue(), "audio/wav"))
    return clips


def make_images(n: int, width: int = 640, height: int = 480) -> list[tuple[bytes, str]]:
    """640x480 photos-like images (gradients, shapes, sensor noise), PNG and JPEG alternately."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    out = []
    for i in range(n):
        base = np.stack([(xx * (0.3 + 0.01 * (i % 7)) + yy * 0.2) % 256,
                         (yy * 0.5 + 40 * i) % 256,
                         (xx * 0.1 + yy * 0.3 + 90) % 256], axis=-1)
        noisy = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        im = Image.fromarray(noisy, "RGB")
        draw = ImageDraw.Draw(im)
        for j in range(6):
            x0, y0 = int(rng.integers(0, width - 100)), int(rng.integers(0, height - 100))
            draw.ellipse((x0, y0, x0 + 40 + 10 * j, y0 + 30 + 8 * j),
                         fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        buf = io.BytesIO()
        if i % 2 == 0:
            im.save(buf, format="PNG")
            out.append((buf.getvalue(), "image/png"))
        else:
            im.save(buf, format="JPEG", quality=90)
            out.append((buf.getvalue(), "image/jpeg"))
    return out


def make_events(items: list[tuple[bytes, str]], modality: str, tag: str,
                store_url: str, by_ref_above: int | None) -> list[ev.Event]:
    """Raw input events; those above ``by_ref_above`` bytes carry only a ``dataref`` (the
    bytes are written to the blob store first, as ``driftloop.client`` does)."""
    store = None
    out = []
    for i, (body, ct) in enumerate(items):
        eid = f"{tag}-{i}"
        if by_ref_above is not None and len(body) > by_ref_above:
            if store is None:
                store = open_store(store_url, Settings())
            key = f"bench-inputs/{modality}/{eid}"
            store.put(key, body)
            out.append(ev.new_event(ev.INPUT, "bench", None, id=eid, datacontenttype=ct,
                                    model=MODEL[modality],
                                    **{EXTENSION: dataref_for(store.url, key)}))
        else:
            out.append(ev.new_event(ev.INPUT, "bench", body, id=eid, datacontenttype=ct,
                                    model=MODEL[modality]))
    return out


def loop_rate(settings: Settings, evs: list[ev.Event], modality: str, units: float
              ) -> tuple[float, float]:
    """(units per wall second, CPU ms per item) of the plain loop over the same records."""
    cfg = preprocess_config(settings)
    refs = blob_refs(settings, cfg)
    offload = blob_writes(settings)  # the same blob writes as the job's (above the limit)
    encoded = [ev.to_kafka(e, key=bus.input_key(e)) for e in evs]
    t0, c0 = time.perf_counter(), time.process_time()
    for rec in encoded:
        out = process_kafka_record(
            rec.value, rec.headers, modality=modality, source_topic="raw",
            output_topic="out", deadletter_topic="dl", cfg=cfg, resolve=refs,
            offload=offload)
        assert out.reason is None, out.reason
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return units / wall, 1000 * cpu / len(evs)


class CpuSampler:
    """The job's process-tree CPU seconds, sampled every ``every_s`` in the background, so
    the CPU spent between two moments in the past can be read back (interpolated)."""

    def __init__(self, pid: int, every_s: float = 0.05) -> None:
        import threading

        self.pid, self.every_s = pid, every_s
        self.samples: list[tuple[float, float]] = []  # (epoch s, CPU s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), tree_cpu_s(self.pid)))
            self._stop.wait(self.every_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def at(self, t: float) -> float:
        samples = list(self.samples)  # a snapshot: the sampler thread keeps appending
        return float(np.interp(t, [x for x, _ in samples], [c for _, c in samples]))


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The committed end of each partition of ``topic``: where a new job's outputs start
    (earlier jobs of the run wrote the same ids there)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             isolation_level="read_committed", enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or {0}]
        return {tp.partition: off for tp, off in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()


def watch_outputs(bootstrap: str, topic: str, start: dict[int, int],
                  groups: dict[str, set[str]], timeout_s: float
                  ) -> tuple[dict[str, list[float]], float]:
    """Per group of ids, the Kafka timestamps (epoch s) of their output records after the
    offsets ``start``: the time the job's producer sent each (before its transaction
    committed), so a watcher that reads a burst of committed records late still sees when
    the job made them. Also the wall time (monotonic) the first record was seen."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             isolation_level="read_committed", enable_auto_commit=False,
                             fetch_max_bytes=64 * 1024 * 1024)
    parts = [TopicPartition(topic, p) for p in start]
    consumer.assign(parts)
    for tp in parts:
        consumer.seek(tp, start[tp.partition])
    missing = {g: set(ids) for g, ids in groups.items()}
    stamps: dict[str, list[float]] = {g: [] for g in groups}
    first_seen = math.nan
    deadline = time.monotonic() + timeout_s
    try:
        while any(missing.values()):
            if time.monotonic() > deadline:
                left = sum(len(v) for v in missing.values())
                raise TimeoutError(f"{left} outputs missing after {timeout_s}s")
            batch = consumer.poll(timeout_ms=100)
            for recs in batch.values():
                for r in recs:
                    ce_id = dict(r.headers).get("ce_id", b"").decode()
                    g = ce_id.split("-", 1)[0]
                    if g in missing and ce_id in missing[g]:
                        missing[g].discard(ce_id)
                        stamps[g].append(r.timestamp / 1000)
                        if math.isnan(first_seen):
                            first_seen = time.monotonic()
        return stamps, first_seen
    finally:
        consumer.close()


def rate_of(stamps: list[float], unit: float, cpu: CpuSampler) -> tuple[float, float]:
    """(units per wall second, job CPU ms per item) of one repeat, from its first output
    record to its last (by the records' timestamps)."""
    t_first, t_last = min(stamps), max(stamps)
    after = len(stamps) - 1
    if after == 0 or t_last <= t_first:
        return math.nan, math.nan
    return (after * unit / (t_last - t_first),
            1000 * (cpu.at(t_last) - cpu.at(t_first)) / after)


def median(values: Iterable[float]) -> float:
    """The median of the measured values (repeats without a rate left out)."""
    kept = [v for v in values if not math.isnan(v)]
    return statistics.median(kept) if kept else math.nan


@dataclass
class Result:
    modality: str
    parallelism: int
    loop_rate: float
    job_rate: float
    ratio: float
    loop_cpu_ms: float
    job_cpu_ms: float
    submitted_s: float
    first_output_s: float
    by_ref_above: int | None
    offload_above: int | None
    loop_rates: list[float]
    job_rates: list[float]


def wait_idle(bootstrap: str, topic: str, quiet_s: float, timeout_s: float) -> None:
    """Wait until the job's committed output stops growing for ``quiet_s`` (several
    checkpoints): it has worked through its whole backlog, on every partition."""
    deadline = time.monotonic() + timeout_s
    last, since = end_offsets(bootstrap, topic), time.monotonic()
    while time.monotonic() - since < quiet_s:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the job still writing to {topic} after {timeout_s}s")
        time.sleep(0.5)
        now = end_offsets(bootstrap, topic)
        if now != last:
            last, since = now, time.monotonic()


def publish_at_once(bootstrap: str, topic: str, evs: list[ev.Event]) -> None:
    """Publish ``evs`` in one Kafka transaction: the job (reading committed records) sees
    the whole repeat at once, a backlog, as the loop gets its list."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 16 << 20,
                         "transactional.id": f"bench-{evs[0].id}"})
    producer.init_transactions(60)
    producer.begin_transaction()
    for e in evs:
        rec = ev.to_kafka(e, key=bus.input_key(e))
        producer.produce(topic, key=rec.key, value=rec.value, headers=rec.headers)
        producer.poll(0)
    producer.commit_transaction(120)


def run_job(base: Settings, work: Path, modality: str, parallelism: int,
            runs: dict[str, list[ev.Event]], warm: list[ev.Event], unit: float,
            timeout_s: float) -> tuple[list[tuple[float, float]], float, float]:
    """Start one preprocess application (its own consumer group and checkpoints) over a
    backlog that ends with ``warm``; once it has read all of it, publish each repeat in
    one transaction and time the job over it; stop it.

    A repeat is measured alone: with more partitions than subtasks one subtask reads
    several partitions at paces of its own, so repeats loaded together would interleave
    and each would span the others' time."""
    tag = f"{modality}-p{parallelism}"
    settings = base.model_copy(update={
        "state_dir": work / f"state-{tag}", "flink_parallelism": parallelism,
        "flink_group_id": f"bench-{tag}",
        # The mini-cluster's REST API on a free port: not the stack's, nor another bench's.
        "flink_rest_port": free_port()})
    source, output = topics.raw(modality), topics.preprocessed(modality)
    ready = settings.state_dir / "flink" / "ready.json"
    start = end_offsets(base.kafka_bootstrap, output)
    t0 = time.monotonic()
    proc = spawn([*argv(settings, ready), "--modalities", modality],
                 log_path=work / f"flink-{tag}.log",
                 env={**settings_env(settings), "PYTHONPATH": str(PROJECT_ROOT)},
                 cwd=PROJECT_ROOT)
    cpu = CpuSampler(proc.pid)  # from the spawn: the job may run before its ready file
    try:
        wait_until(ready.exists, timeout_s=300, what="flink job",
                   alive=lambda: proc.poll() is None, log_path=work / f"flink-{tag}.log")
        submitted = time.monotonic() - t0
        _, first_seen = watch_outputs(base.kafka_bootstrap, output, start,
                                      {warm[0].id.split("-", 1)[0]: {e.id for e in warm}},
                                      timeout_s)
        wait_idle(base.kafka_bootstrap, output, quiet_s=5.0, timeout_s=timeout_s)
        rates = []
        for g, evs in runs.items():
            start = end_offsets(base.kafka_bootstrap, output)
            publish_at_once(base.kafka_bootstrap, source, evs)
            stamps, _ = watch_outputs(base.kafka_bootstrap, output, start,
                                      {g: {e.id for e in evs}}, timeout_s)
            rates.append(rate_of(stamps[g], unit, cpu))
        return rates, submitted, first_seen - t0
    finally:
        cpu.stop()
        stop_pid(proc.pid, timeout_s=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modality", default="audio,image")
    ap.add_argument("--parallelism", default="1,2")
    ap.add_argument("--items", "--clips", type=int, default=200, dest="items")
    ap.add_argument("--seconds", type=float, default=2.0, help="length of each audio clip")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=60,
                    help="items the job handles before the measured repeats (JIT, caches)")
    ap.add_argument("--by-ref-above", type=int, default=None,
                    help="inputs above this many bytes travel by dataref (default: all inline)")
    ap.add_argument("--offload-above", type=int, default=None,
                    help="output payloads whose base64 form is above this many bytes go to "
                    "the blob store, on both sides (flink_inline_max_bytes; default: inline)")
    ap.add_argument("--execution-mode", choices=["thread", "process"], default="thread",
                    help="where the Python functions run (python.execution-mode)")
    ap.add_argument("--bundle-size", type=int, default=None,
                    help="records per Python bundle and Arrow batch (flink_bundle_size)")
    ap.add_argument("--bundle-time-ms", type=int, default=50,
                    help="longest wait of a Python bundle (flink_bundle_time_ms)")
    ap.add_argument("--operator-chaining", choices=["on", "off"], default="off",
                    help="chain the job's operators into one task (flink_operator_chaining)")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--out-json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    modalities = [m.strip() for m in args.modality.split(",") if m.strip()]
    parallelisms = [int(p) for p in args.parallelism.split(",") if p.strip()]

    work = Path(tempfile.mkdtemp(prefix="bench-flink-"))
    broker = KafkaBroker(libs_dir=Settings().cache_dir / "kafka" / "libs",
                         data_dir=work / "kafka", port=free_port(),
                         controller_port=free_port(), heap="512m")
    broker.format_storage()
    kproc = spawn(broker.argv(), log_path=work / "kafka.log")
    results: list[Result] = []
    try:
        wait_until(broker.healthy, timeout_s=300, what="kafka")
        base = Settings(kafka_bootstrap=broker.bootstrap, state_dir=work / "state",
                        blob_url=(work / "blobs").as_uri(), flink_pipelines="preprocess",
                        topic_partitions=max(parallelisms),
                        flink_checkpoint_interval_ms=500,
                        flink_bundle_time_ms=args.bundle_time_ms,
                        **({"flink_bundle_size": args.bundle_size} if args.bundle_size else {}),
                        flink_inline_max_bytes=(1 << 20 if args.offload_above is None
                                                else args.offload_above),
                        flink_execution_mode=args.execution_mode,
                        flink_operator_chaining=args.operator_chaining == "on")
        create_topics(base)
        producer = bus.make_producer(base, max_request_size=16 * 1024 * 1024,
                                     delivery_timeout_ms=600_000, request_timeout_ms=120_000)
        for modality in modalities:
            items = (make_clips(args.items, args.seconds) if modality == "audio"
                     else make_images(args.items))
            unit = args.seconds if modality == "audio" else 1.0
            for p in parallelisms:
                # Ids of their own per job (a group is the id's part before its first "-").
                runs = {f"p{p}run{r}": make_events(items, modality, f"p{p}run{r}",
                                                   base.resolved_blob_url, args.by_ref_above)
                        for r in range(args.repeats)}
                warm = make_events((items * 2)[:args.warmup], modality, f"p{p}warm",
                                   base.resolved_blob_url, args.by_ref_above)
                for i in range(0, len(warm), 20):  # loaded before the job starts: a backlog
                    bus.publish(producer, topics.raw(modality), warm[i:i + 20],
                                timeout_s=600)
                job, submitted, first_out = run_job(base, work, modality, p, runs, warm, unit,
                                                    args.timeout)
                loop = [loop_rate(base, evs, modality, unit * len(evs))
                        for evs in runs.values()]
                jr, lr = [r for r, _ in job], [r for r, _ in loop]
                res = Result(modality, p, median(lr), median(jr),
                             median(jr) / median(lr),
                             median(c for _, c in loop),
                             median(c for _, c in job), submitted, first_out,
                             args.by_ref_above, args.offload_above, lr, jr)
                results.append(res)
                what = "s of audio" if modality == "audio" else "images"
                print(f"{modality} p={p}: loop {res.loop_rate:.1f} / job {res.job_rate:.1f} "
                      f"{what} per wall s (medians of {args.repeats}) -> ratio "
                      f"{res.ratio:.2f}; CPU ms/item loop {res.loop_cpu_ms:.1f} job "
                      f"{res.job_cpu_ms:.1f}; submitted {submitted:.1f} s, first output "
                      f"{first_out:.1f} s; load {os.getloadavg()[0]:.1f}", flush=True)
        producer.close()
        print(f"inputs: {args.items} per repeat; audio {args.seconds:g} s 44.1 kHz int16 WAV "
              "-> 16 kHz; images 640x480 PNG/JPEG -> letterboxed 224x224; "
              f"by reference above: {args.by_ref_above}; outputs to the blob store above: "
              f"{args.offload_above}")
        for r in results:
            print(f"ratio {r.modality} p={r.parallelism}: {r.ratio:.2f}  "
                  f"(first output after {r.first_output_s:.1f} s)")
        if args.out_json:
            Path(args.out_json).write_text(json.dumps({
                "bench": "flink_preprocess", "load_1m": os.getloadavg()[0],
                "cpus": os.cpu_count(), "args": vars(args),
                "results": [asdict(r) for r in results],
                "goals": [{"figure": f"flink preprocess {r.modality} p={r.parallelism} / "
                           "plain loop", "goal": f">= {GOALS[r.parallelism]:g}x",
                           "measured": round(r.ratio, 2), "met": r.ratio >= GOALS[r.parallelism]}
                          for r in results if r.parallelism in GOALS],
                # the capacity plan reads the audio figures at parallelism 1
                **_capacity_fields(results, args.seconds)}, indent=1))
    finally:
        stop_pid(kproc.pid, timeout_s=20)


def _capacity_fields(results: list[Result], seconds: float) -> dict[str, float]:
    audio = [r for r in results if r.modality == "audio" and r.parallelism == 1]
    if not audio:
        return {}
    r = audio[0]
    return {"parallelism": 1, "audio_s_per_s": r.job_rate, "numpy_audio_s_per_s": r.loop_rate,
            "clips_per_s": r.job_rate / seconds, "clips_per_core_s": r.job_rate / seconds,
            "startup_s": r.submitted_s, "first_output_s": r.first_output_s}


if __name__ == "__main__":
    main()
