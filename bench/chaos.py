"""The fault matrix: steady load, one fault at a time, and what was lost or doubled.

Load: app threads post feedback to feedback-intake in all three CloudEvents modes (binary,
structured, a batch of three), retrying what got no 202 as an app does (the same (source, id)
again), each followed by its prediction event on ``driftloop.predictions`` (what the model
server emits; faults 6 and 7 add an app asking MLServer itself). Flink joins them into
``driftloop.labeled`` and archives feedback and labeled records into the S3 store; the
dispatcher delivers the feedback topic to a sink that materialises each event once. Every
fault has a source of its own, so its accounting reads only its events:

- acknowledged: events answered 202 (per item in a batch);
- delivered: per materialised output, the acknowledged events it holds: the feedback and
  labeled topics (read_committed), the feedback and labeled archives in the S3 store, the
  dispatcher's sink;
- lost: acknowledged events missing from at least one output (``lost_in`` per output);
- duplicates: records of one (source, id) beyond the first, summed over the outputs
  (``duplicates_in`` per output);
- recovery_s: from the fault (the kill; for an outage, its end) to the first successful
  write of what it hit: a 202 for intake and Kafka, a labeled record for Flink, an archive
  file for the S3 store, a delivery for the dispatcher;
- new_input_s (faults 3 and 4): from the fault to the first labeled record of an event sent
  after it. recovery_s also counts the commit of a checkpoint completed just before the
  fault; this is when new input flows through again;
- outcome: the promotion's decision where a canary ran, else "recovered" or what failed.

Faults (issue 13's numbering): 1 SIGKILL the leader broker of the feedback partition and
restart it; 2 two brokers down (intake answers 503, never 202) — both need the HA topology
(three brokers); 3 SIGKILL the TaskManager running the job; 4 SIGKILL the JobManager
(light topology: the application is resubmitted and restores from its last checkpoint; ha:
the standby JobManager takes the same job over from ZooKeeper and its HA store); 5 the S3
server stopped for 20 s; 6 SIGKILL MLServer during a canary; 7 Prometheus stopped during a
canary; 8 SIGKILL the dispatcher mid-delivery; 9 SIGKILL feedback-intake with requests in
flight.
A killed process is restarted at once, as a supervisor would, except the 'ha' topology's
JobManager: a cluster starts it again on another node, here it would share the two cores
with the takeover, so it starts once the job's tasks run again (as the new standby). Faults
3, 4 and 5 (their recovery is a write of the Flink job) wait until the job keeps up with the
load (every event acknowledged 5-15 s before is labeled): a fault on a job still catching up
with the load's start would count that catching up as recovery.

    .venv/bin/python bench/chaos.py [--faults 3,4,9] [--json] [--out-json FILE]
        [--state DIR] [--taskmanagers 2] [--topology light|ha] [--flink-ha] [--drain-s 150]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import queue
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.chaos_rig import Rig, intake_url, sigkill, start_rig  # noqa: E402
from driftloop import bus, topics  # noqa: E402
from driftloop import events as ev  # noqa: E402
from driftloop.archive import is_committed  # noqa: E402
from driftloop.errors import DriftloopError  # noqa: E402

MODEL = "digits"
RECOVERY_GOAL_S = 30.0
STEADY_LAG_S = 5.0
"""The loop keeps up when every event acknowledged between ``STEADY_WINDOW_S`` and this
long ago is labeled already (a checkpoint every 2 s commits the labeled records)."""
STEADY_WINDOW_S = 15.0
STEADY_TIMEOUT_S = 180.0
FLINK_FAULTS = (3, 4, 5)
"""Faults whose recovery is a write of the Flink job: they wait until it keeps up."""
SETTLE_S = 1.0
"""A write seen within this long after a kill may be the killed process's last (a
delivery or a commit in flight): recovery counts writes seen after it."""
FAULTS = {
    1: "SIGKILL the feedback partition's leader broker, restart it",
    2: "two brokers down: 503, never 202",
    3: "SIGKILL the TaskManager running the job",
    4: "SIGKILL the JobManager (recovered from its last checkpoint)",
    5: "S3 server stopped for 20 s during archive",
    6: "SIGKILL MLServer during a canary",
    7: "Prometheus stopped during a canary",
    8: "SIGKILL the dispatcher mid-delivery",
    9: "SIGKILL feedback-intake with requests in flight",
}
Key = tuple[str, str]


# --------------------------------------------------------------------------- load


class Load:
    """App threads: feedback to intake until 202, then its prediction event to Kafka (what
    the model server emits; the join pairs them in either order)."""

    def __init__(self, rig: Rig, source: str, *, threads: int = 3, pause_s: float = 0.05
                 ) -> None:
        self.rig, self.source, self.threads, self.pause_s = rig, source, threads, pause_s
        self.acked: dict[Key, float] = {}
        self.sent_after: dict[Key, float] = {}  # when the answered request was sent
        self.statuses: Counter[str] = Counter()
        self.inflight = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._producer = bus.make_producer(rig.settings)
        self._predictions: queue.Queue[list[ev.Event] | None] = queue.Queue()
        self._publisher = threading.Thread(target=self._publish, daemon=True)

    def start(self) -> None:
        self._publisher.start()
        for w in range(self.threads):
            t = threading.Thread(target=self._work, args=(w,), daemon=True)
            t.start()
            self._workers.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=60)
        self._predictions.put(None)
        self._publisher.join(timeout=330)
        with contextlib.suppress(Exception):
            self._producer.close(timeout=5)

    def first_ack_after(self, t: float) -> float | None:
        with self._lock:
            times = [a for k, a in self.acked.items() if self.sent_after[k] >= t]
        return min(times) if times else None

    def acked_between(self, t0: float, t1: float) -> list[Key]:
        """Events answered 202 between t0 and t1."""
        with self._lock:
            return [k for k, a in self.acked.items() if t0 <= a <= t1]

    def acked_after(self, t: float) -> set[Key]:
        with self._lock:
            return {k for k, s in self.sent_after.items() if s >= t}

    def _events(self, w: int, n: int, count: int) -> list[ev.Event]:
        out = []
        for j in range(count):
            fid = f"{w}-{n}-{j}"
            pid = f"p-{self.source}-{fid}"
            out.append(ev.new_event(ev.FEEDBACK, self.source,
                                    {"prediction_id": pid, "model": MODEL, "truth": n % 10},
                                    id=fid))
        return out

    def _publish(self) -> None:
        """Predictions in their own thread: the apps keep asking intake while Kafka refuses
        writes (a 503 must be seen, not a thread stuck publishing)."""
        while (fbs := self._predictions.get()) is not None:
            self._predict(fbs)

    def _predict(self, fbs: list[ev.Event]) -> None:
        preds = [ev.new_event(ev.PREDICTION, "chaos/serving",
                              {"model": MODEL, "version": "1",
                               "output": {"label": int(e.data["truth"]), "confidence": 0.9}},
                              id=str(e.data["prediction_id"])) for e in fbs]
        deadline = time.monotonic() + 300  # its feedback was acknowledged: it must join
        while time.monotonic() < deadline:
            try:
                bus.publish(self._producer, topics.PREDICTIONS, preds, timeout_s=10)
                return
            except Exception:
                time.sleep(0.2)

    def _post(self, client: httpx.Client, mode: int, evs: list[ev.Event]) -> dict[str, int]:
        if mode == 0:
            headers, body = ev.to_http_binary(evs[0])
            r = client.post("/", headers=headers, content=body)
        elif mode == 1:
            r = client.post("/", headers={"content-type": ev.STRUCTURED},
                            content=json.dumps(ev.to_structured(evs[0])))
        else:
            r = client.post("/", headers={"content-type": ev.BATCH},
                            content=json.dumps([ev.to_structured(e) for e in evs]))
        self.statuses[str(r.status_code)] += 1
        if r.status_code == 207:
            items = r.json().get("results") or r.json().get("items") or []
            return {str(x.get("id")): int(x.get("status", 0)) for x in items}
        return {e.id: r.status_code for e in evs}

    def _work(self, w: int) -> None:
        url = intake_url(self.rig.intake)
        n = 0
        with httpx.Client(base_url=url, timeout=30) as client:
            while not self._stop.is_set():
                mode = n % 3
                batch = self._events(w, n, 3 if mode == 2 else 1)
                pending = list(batch)
                while pending and not self._stop.is_set():
                    sent = time.time()
                    with self._lock:
                        self.inflight += 1
                    try:
                        got = self._post(client, mode if len(pending) > 1 or mode < 2 else 1,
                                         pending)
                    except httpx.HTTPError as err:
                        self.statuses[type(err).__name__] += 1
                        got = {}
                    finally:
                        with self._lock:
                            self.inflight -= 1
                    now = time.time()
                    with self._lock:
                        for e in pending:
                            if got.get(e.id) == 202:
                                self.acked[(e.source, e.id)] = now
                                self.sent_after[(e.source, e.id)] = sent
                    pending = [e for e in pending if got.get(e.id) != 202]
                    if pending:
                        time.sleep(0.2)
                # The prediction after its feedback (the join takes either order): an app
                # stuck on a 503 keeps asking intake, whatever Kafka does to predictions.
                self._predictions.put([e for e in batch if e not in pending])
                n += 1
                time.sleep(self.pause_s)


# --------------------------------------------------------------------------- outputs


class TopicTail(threading.Thread):
    """Committed records of one topic from its end at start (read_committed), keyed by the
    (source, id) they materialise; counts every copy and when each key was first seen."""

    def __init__(self, rig: Rig, topic: str, key: Callable[[ev.Event], Key | None]) -> None:
        super().__init__(daemon=True)
        from kafka import KafkaConsumer, TopicPartition

        self.topic, self.key = topic, key
        self.counts: Counter[Key] = Counter()
        self.first: dict[Key, float] = {}
        self.partitions: Counter[int] = Counter()
        self._halt = threading.Event()
        self.consumer = KafkaConsumer(bootstrap_servers=rig.settings.kafka_bootstrap,
                                      enable_auto_commit=False, group_id=None,
                                      isolation_level="read_committed",
                                      fetch_max_bytes=64 * 1024 * 1024)
        parts = [TopicPartition(topic, p)
                 for p in self.consumer.partitions_for_topic(topic) or []]
        self.consumer.assign(parts)
        self.consumer.seek_to_end(*parts)
        for tp in parts:
            self.consumer.position(tp)

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                batches = self.consumer.poll(timeout_ms=300)
            except Exception:
                time.sleep(0.5)
                continue
            now = time.time()
            for recs in batches.values():
                for r in recs:
                    try:
                        k = self.key(ev.from_kafka(r.value, r.headers, r.key))
                    except DriftloopError:
                        continue
                    if k is not None:
                        self.partitions[r.partition] += 1
                        self.counts[k] += 1
                        self.first.setdefault(k, now)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)
        with contextlib.suppress(Exception):
            self.consumer.close()


class ArchiveWatch(threading.Thread):
    """The committed archive files of one kind in the S3 store: each file read once (files
    are immutable once committed), the lines of ``source`` counted per (source, id)."""

    def __init__(self, rig: Rig, kind: str, source: str) -> None:
        super().__init__(daemon=True)
        self.rig, self.kind, self.source = rig, kind, source
        self.prefix = f"{kind}/model={MODEL}/"
        self.files: dict[str, list[Key]] = {}
        self.file_seen: dict[str, float] = {}
        self.counts: Counter[Key] = Counter()
        self.first: dict[Key, float] = {}
        self.errors = 0
        self._halt = threading.Event()
        self._store = rig.store
        self.known = set(self._list())

    def _list(self) -> list[str]:
        return [k for k in self._store.list(self.prefix) if is_committed(k)]

    def _keys(self, line: dict[str, Any]) -> Key | None:
        raw = line.get("data")
        data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if line.get("type") == ev.LABELED:
            pair = (str(data.get("feedback_source")), str(data.get("feedback_id")))
        else:
            pair = (str(line.get("source")), str(line.get("id")))
        return pair if pair[0] == self.source else None

    def scan(self) -> None:
        for key in self._list():
            if key in self.known or key in self.files:
                continue
            now = time.time()
            pairs = []
            for raw in self._store.get(key).decode().splitlines():
                if raw.strip():
                    k = self._keys(json.loads(raw))
                    if k is not None:
                        pairs.append(k)
            self.files[key], self.file_seen[key] = pairs, now
            for k in pairs:
                self.counts[k] += 1
                self.first.setdefault(k, now)

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.scan()
            except Exception:
                self.errors += 1
            self._halt.wait(1.0)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)
        with contextlib.suppress(Exception):
            self.scan()


def _feedback_key(e: ev.Event) -> Key | None:
    return (e.source, e.id) if e.type == ev.FEEDBACK else None


def _labeled_key(e: ev.Event) -> Key | None:
    if e.type != ev.LABELED or not isinstance(e.data, dict):
        return None
    return (str(e.data.get("feedback_source")), str(e.data.get("feedback_id")))


class Outputs:
    """Every materialised output, watched from before the fault's load starts."""

    def __init__(self, rig: Rig, source: str) -> None:
        self.rig, self.source = rig, source
        self.topics = {"feedback_topic": TopicTail(rig, topics.FEEDBACK, _feedback_key),
                       "labeled_topic": TopicTail(rig, topics.LABELED, _labeled_key)}
        self.archives = {"feedback_archive": ArchiveWatch(rig, "feedback", source),
                         "labeled_archive": ArchiveWatch(rig, "labeled", source)}
        self.deliveries_from = len(rig.sink.delivered_at)

    def start(self) -> None:
        for t in (*self.topics.values(), *self.archives.values()):
            t.start()

    def stop(self) -> None:
        for tail in self.topics.values():
            tail.stop()
        for watch in self.archives.values():
            watch.stop()

    def counts(self, *, final: bool = False, acked: Iterable[Key] = ()
               ) -> dict[str, Counter[Key]]:
        """Copies per (source, id) in each output; the sink's are read from the store only
        when ``final`` (while draining, what it acknowledged creating)."""
        out: dict[str, Counter[Key]] = {}
        for name, t in self.topics.items():
            out[name] = Counter({k: n for k, n in list(t.counts.items()) if k[0] == self.source})
        for name, a in self.archives.items():
            out[name] = Counter(a.counts)
        sink = self.rig.sink
        out["dispatched"] = (sink.seen(self.source, acked) if final
                             else Counter(sink.first_seen(self.source)))
        return out

    def first_seen(self, name: str) -> dict[Key, float]:
        if name in self.topics:
            return dict(self.topics[name].first)
        if name in self.archives:
            return dict(self.archives[name].first)
        return self.rig.sink.first_seen(self.source)


# --------------------------------------------------------------------------- results


@dataclass
class FaultResult:
    fault: int
    name: str
    acknowledged: int | None = None
    delivered: dict[str, int] = field(default_factory=dict)
    lost: int | None = None
    duplicates: int | None = None
    recovery_s: float | None = None
    outcome: str = ""
    lost_in: dict[str, int] = field(default_factory=dict)
    duplicates_in: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    redelivered: int | None = None
    lost_sample: list[list[str]] = field(default_factory=list)
    """Up to five lost (source, id)s, to look them up."""
    new_input_s: float | None = None
    """Flink faults: from the fault to the first labeled record of an event sent after it.
    recovery_s may be the commit of a checkpoint completed just before the fault; this is
    when new input flows through again."""
    notes: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def skipped(fault: int, why: str) -> FaultResult:
    return FaultResult(fault=fault, name=FAULTS[fault], outcome=f"skipped: {why}")


# --------------------------------------------------------------------------- faults


@dataclass
class Injected:
    at: float
    """When the fault hit (a kill), or when an outage ended: recovery counts from here."""
    watch: str
    """What recovery is the first write of: intake, labeled_topic, feedback_archive,
    dispatched."""
    notes: str = ""
    ready_at: float | None = None
    acked_while_down: int = 0


def _when(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check() and time.monotonic() < deadline:
        time.sleep(0.001)


def fault_intake(rig: Rig, load: Load) -> Injected:
    _when(lambda: load.inflight >= 2)  # requests in flight, their answers not yet sent
    t = time.time()
    rig.intake.kill()
    rig.intake.start()
    return Injected(t, "intake")


def fault_dispatcher(rig: Rig, load: Load) -> Injected:
    _when(lambda: rig.sink.inflight >= 1)  # a delivery the sink has not answered yet
    t = time.time()
    rig.dispatcher.kill()
    rig.dispatcher.start()
    return Injected(t, "dispatched")


def fault_taskmanager(rig: Rig, load: Load) -> Injected:
    name = rig.flink.busy_taskmanager()
    t = time.time()
    rig.flink.kill_process(name)
    rig.flink.start_process(name)
    return Injected(t, "labeled_topic", f"killed {name}")


def fault_jobmanager(rig: Rig, load: Load) -> Injected:
    """SIGKILL the JobManager (and the submitter attached to it), restart both. Without HA
    the job is gone and the submitter submits it again from its last checkpoint; with HA
    (topology 'ha') the restarted JobManager recovers it (same id) and the submitter adopts
    it."""
    before = str(rig.flink.job["job_id"])
    t = time.time()
    rig.flink.kill_process("flink-jobmanager")
    sigkill(rig.flink.submitter)  # it dies with its JobManager; a supervisor restarts both
    rig.flink.submitter = None
    led = ""
    if rig.flink.ha:
        # A cluster restarts the killed JobManager on another node; on this machine's two
        # cores its JVM start would compete with the standby's takeover, so it waits until
        # the job runs again (it comes back as the new standby, not part of the recovery).
        lead_s, running_s = rig.flink.wait_standby_runs(before, timeout_s=120.0)
        led = (f"; the standby led with the job after {lead_s:.1f} s, its tasks ran after"
               f" {running_s:.1f} s")
    rig.flink.start_process("flink-jobmanager")
    for tm in rig.flink.taskmanagers():  # TaskManagers re-register with the new JobManager
        try:
            from driftloop.local.process import wait_until

            wait_until(rig.flink.specs[tm].health, timeout_s=60, what=tm)
        except Exception:
            rig.flink.kill_process(tm)
            rig.flink.start_process(tm)
    rig.flink.submit()
    after = str(rig.flink.job["job_id"])
    jobs = rig.flink.active_jobs()
    if after == before:
        note = f"job {after} recovered by the restarted JobManager (HA), not resubmitted"
    else:
        note = f"resubmitted as {after}, restored from {rig.flink.job.get('restored_from')}"
    return Injected(t, "labeled_topic", f"{note}; active jobs {len(jobs)}{led}")


def fault_s3(rig: Rig, load: Load, outage_s: float = 20.0) -> Injected:
    rig.s3.stop()
    time.sleep(outage_s)
    rig.s3.start()
    return Injected(time.time(), "feedback_archive", f"S3 down {outage_s:.0f} s")


def _feedback_partition(out: Outputs) -> int:
    """The feedback partition this fault's events go to (the key is the model)."""
    parts = out.topics["feedback_topic"].partitions
    return parts.most_common(1)[0][0] if parts else 0


def fault_leader_broker(rig: Rig, out: Outputs) -> Injected:
    from driftloop.local import kafka_cluster

    cs = rig.kafka_cluster
    partition = _feedback_partition(out)
    leader = kafka_cluster.leader(cs, topics.FEEDBACK, partition)
    t = time.time()
    kafka_cluster.kill_broker(cs, leader.node_id)
    kafka_cluster.restart_broker(cs, leader.node_id)
    kafka_cluster.wait_isr(cs, topics.FEEDBACK, partition_ids=[partition])
    return Injected(t, "intake", f"killed broker {leader.node_id}, the leader of "
                                 f"{topics.FEEDBACK}/{partition}")


def fault_two_brokers(rig: Rig, out: Outputs, load: Load, down_s: float = 10.0) -> Injected:
    """Two of three brokers down: with min.insync.replicas 2 nothing is durable, so intake
    must answer 503 and never 202 while they are down."""
    from driftloop.local import kafka_cluster

    cs = rig.kafka_cluster
    leader = kafka_cluster.leader(cs, topics.FEEDBACK, _feedback_partition(out))
    others = [b.node_id for b in kafka_cluster.brokers(cs) if b.node_id != leader.node_id]
    victims = [leader.node_id, others[0]]
    kafka_cluster.kill_brokers(cs, victims)
    down_at = time.time()
    time.sleep(down_s)
    up_at = time.time()
    acked_down = [k for k in load.acked_after(down_at) if load.acked[k] < up_at]
    for n in victims:
        kafka_cluster.restart_broker(cs, n)
    kafka_cluster.wait_isr(cs, topics.FEEDBACK)
    return Injected(up_at, "intake",
                    f"brokers {victims} down {down_s:.0f} s: {len(acked_down)} answered 202 "
                    f"while down", acked_while_down=len(acked_down))


def fault_mlserver(canary: Any, app: Any, version: str) -> Injected:
    t = time.time()
    canary.mlserver.kill()
    canary.mlserver.start()
    return Injected(t, "prediction", "MLServer killed during the canary")


def fault_prometheus(canary: Any, app: Any, version: str) -> Injected:
    """Prometheus stopped for the rest of the bake: the decision is taken without it (the
    guard must not promote on evidence it cannot read); started again after the decision."""
    from bench.chaos_canary import MODEL as CANARY_MODEL

    canary.prometheus.stop()
    down = time.time()
    canary.service.wait(CANARY_MODEL, version, timeout_s=300)
    t = time.time()
    canary.prometheus.start()  # waits until ready
    return Injected(t, "prometheus", f"Prometheus down {t - down:.0f} s, until the decision",
                    ready_at=time.time())


CANARY_FAULTS = (6, 7)
CANARY_INJECT: dict[int, Callable[[Any, Any, str], Injected]] = {6: fault_mlserver,
                                                            7: fault_prometheus}
INJECT: dict[int, Callable[[Rig, Load], Injected]] = {
    3: fault_taskmanager, 4: fault_jobmanager, 5: fault_s3,
    8: fault_dispatcher, 9: fault_intake,
}


def recovered_at(inj: Injected, load: Load, out: Outputs, app: Any = None) -> float | None:
    """The first successful write after the fault, of what the fault hit."""
    if inj.watch == "prediction":
        got: float | None = app.first_prediction_after(inj.at + SETTLE_S)
        return got
    if inj.watch == "prometheus":
        return inj.at if inj.ready_at is None else inj.ready_at
    if inj.watch == "intake":
        return load.first_ack_after(inj.at)
    if inj.watch == "feedback_archive":
        arch = out.archives["feedback_archive"]
        times = [s for s in arch.file_seen.values() if s >= inj.at]
        return min(times) if times else None
    if inj.watch == "dispatched":
        times = [s for s in out.rig.sink.delivered_at[out.deliveries_from:]
                 if s >= inj.at + SETTLE_S]
        return min(times) if times else None
    seen = out.first_seen(inj.watch)
    times = [s for s in seen.values() if s >= inj.at + SETTLE_S]
    return min(times) if times else None


def run_fault(rig: Rig, fault: int, run: str, *, warm_s: float = 6.0, after_s: float = 8.0,
              recover_timeout_s: float = 180.0, drain_s: float = 150.0, threads: int = 3,
              progress: Callable[[str], object] = print) -> FaultResult:
    if fault in (1, 2) and rig.kafka_cluster is None:
        return skipped(fault, "needs --topology ha")
    canary = rig.canary if fault in CANARY_FAULTS else None
    if fault in CANARY_FAULTS and canary is None:
        return skipped(fault, "no canary: MLServer or Prometheus not installed")
    t0 = time.monotonic()
    source = f"chaos/{fault}/{run}"
    out = Outputs(rig, source)
    out.start()
    load = Load(rig, source, threads=threads)
    load.start()
    app: Any = None
    result = FaultResult(fault=fault, name=FAULTS[fault])
    try:
        _wait(lambda: len(load.acked) >= 30 and bool(out.topics["labeled_topic"].first),
              warm_s + 300, "load before the fault",
              lambda: f"{len(load.acked)} acknowledged, answers {dict(load.statuses)}, "
                      f"{len(out.topics['labeled_topic'].first)} labeled records seen")
        version = ""
        if canary is not None:
            from bench.chaos_canary import AppTraffic, wait_first_verdict

            app = AppTraffic(canary, rig, source)
            app.start()
            version = canary.new_version(f"chaos-{fault}-{run}")
            started = canary.service.start(MODEL, version)
            progress(f"fault {fault}: v{version} in {started.get('phase')}")
            wait_first_verdict(canary, version)
        # A fault on a job still catching up with the load's start would measure that too.
        steady = fault not in FLINK_FAULTS or _wait_keeps_up(load, out, STEADY_TIMEOUT_S)
        time.sleep(warm_s)
        progress(f"fault {fault}: {FAULTS[fault]}"
                 + ("" if steady else " (the labeled output had not caught up)"))
        if canary is not None:
            inj = CANARY_INJECT[fault](canary, app, version)
        elif fault == 1:
            inj = fault_leader_broker(rig, out)
        elif fault == 2:
            inj = fault_two_brokers(rig, out, load)
        else:
            inj = INJECT[fault](rig, load)
        result.notes = inj.notes if steady else f"{inj.notes}; not caught up before the fault"
        at: float | None = None
        deadline = time.monotonic() + recover_timeout_s
        while time.monotonic() < deadline:
            at = recovered_at(inj, load, out, app)
            if at is not None:
                break
            time.sleep(0.5)
        result.recovery_s = round(at - inj.at, 1) if at is not None else None
        if canary is not None:
            from bench.chaos_canary import outcome_of

            result.outcome = outcome_of(canary, version)
        time.sleep(after_s)
    except BaseException:
        out.stop()
        raise
    finally:
        load.stop()
        if app is not None:
            app.stop()
    acked = set(load.acked) | (set(app.acked) if app is not None else set())
    result.acknowledged = len(acked)
    result.statuses = dict(load.statuses)
    progress(f"fault {fault}: {len(acked)} acknowledged, draining the outputs")
    deadline = time.monotonic() + drain_s
    while time.monotonic() < deadline:
        counts = out.counts()
        if all(acked <= set(c) for c in counts.values()):
            break
        time.sleep(1.0)
    time.sleep(3.0)  # a few more checkpoints: a doubled record would show now
    if fault in FLINK_FAULTS and inj.watch == "labeled_topic":
        result.new_input_s = new_input_after(inj.at, load.acked_after(inj.at),
                                             out.first_seen(inj.watch))
    out.stop()
    counts = out.counts(final=True, acked=acked)
    missing: set[Key] = set()
    for name, c in counts.items():
        gone = acked - set(c)
        missing |= gone
        result.delivered[name] = len(acked & set(c))
        result.lost_in[name] = len(gone)
        result.duplicates_in[name] = sum(n - 1 for n in c.values() if n > 1)
    result.lost = len(missing)
    result.lost_sample = [list(k) for k in sorted(missing)[:5]]
    result.duplicates = sum(result.duplicates_in.values())
    result.redelivered = rig.sink.redelivered_of(source)
    broken = " (lost or doubled records)" if result.lost or result.duplicates else ""
    if fault == 2 and inj.acked_while_down:
        broken += f" ({inj.acked_while_down} answered 202 with two brokers down)"
    if canary is not None:
        result.outcome += broken
    elif result.recovery_s is None:
        result.outcome = "not recovered" + broken
    else:
        result.outcome = "recovered" + broken
    result.seconds = round(time.monotonic() - t0, 1)
    return result


def keeps_up(recent: Iterable[Key], labeled: Iterable[Key], at_least: int = 10) -> bool:
    """The loop keeps up: every recent acknowledged event (``at_least`` of them: an idle
    load proves nothing) is in the labeled output."""
    recent, seen = list(recent), set(labeled)
    return len(recent) >= at_least and all(k in seen for k in recent)


def new_input_after(fault_at: float, sent_after: Iterable[Key],
                    labeled_at: dict[Key, float]) -> float | None:
    """Seconds from the fault to the first labeled record of an event sent after it (a
    checkpoint restored and committed late holds only events sent before)."""
    times = [labeled_at[k] for k in sent_after if k in labeled_at]
    return round(min(times) - fault_at, 1) if times else None


def _wait_keeps_up(load: Load, out: Outputs, timeout_s: float) -> bool:
    """Wait until the loop keeps up with the load; False when it did not within timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = time.time()
        recent = load.acked_between(now - STEADY_WINDOW_S, now - STEADY_LAG_S)
        if keeps_up(recent, out.first_seen("labeled_topic")):
            return True
        time.sleep(1.0)
    return False


def _wait(check: Callable[[], bool], timeout_s: float, what: str,
          state: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s ({state()})")
        time.sleep(0.5)


def run_matrix(rig: Rig, faults: list[int], *,
               progress: Callable[[str], object] = print, **kw: Any) -> list[FaultResult]:
    run = uuid.uuid4().hex[:8]
    if any(f in CANARY_FAULTS for f in faults) and rig.canary is None:
        from bench.chaos_canary import start_canary

        rig.canary = start_canary(rig, progress)
        rig.owned.append(rig.canary)
    return [run_fault(rig, f, run, progress=progress, **kw) for f in faults]


def table(results: list[FaultResult]) -> str:
    head = f"{'fault':<58} {'acked':>6} {'lost':>5} {'dup':>4} {'recov s':>8}  outcome"
    lines = [head, "-" * len(head)]
    for r in results:
        name = f"{r.fault} {r.name}"[:58]
        def fmt(v: object) -> str:
            return "-" if v is None else str(v)
        lines.append(f"{name:<58} {fmt(r.acknowledged):>6} {fmt(r.lost):>5} "
                     f"{fmt(r.duplicates):>4} {fmt(r.recovery_s):>8}  {r.outcome}")
        if r.acknowledged is not None:
            per = ", ".join(f"{k} {v}" for k, v in r.delivered.items())
            fresh = ("" if r.new_input_s is None
                     else f"; input sent after the fault labeled after {r.new_input_s} s")
            lines.append(f"    delivered: {per}; redelivered to the sink: {r.redelivered}"
                         + fresh + (f"; {r.notes}" if r.notes else ""))
    return "\n".join(lines)


def goals_met(results: list[FaultResult]) -> bool:
    ran = [r for r in results if r.acknowledged is not None]
    canaries_rolled_back = all(r.outcome.startswith("rolledback") for r in ran
                               if r.fault in CANARY_FAULTS)
    return canaries_rolled_back and all(
        r.lost == 0 and r.duplicates == 0 and r.recovery_s is not None
        and r.recovery_s <= RECOVERY_GOAL_S for r in ran)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faults", default=",".join(str(f) for f in FAULTS),
                   help="comma separated fault numbers (default: all)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--out-json", type=Path, default=None)
    p.add_argument("--state", type=Path, default=None, help="state folder (default: a temp dir)")
    p.add_argument("--taskmanagers", type=int, default=2)
    p.add_argument("--topology", choices=("light", "ha"), default="light",
                   help="ha: three Kafka brokers (faults 1 and 2 need it) and JobManager "
                        "high availability")
    p.add_argument("--flink-ha", action="store_true",
                   help="light topology's one broker with the ha topology's Flink (ZooKeeper, "
                        "a standby JobManager): fault 4 without the three brokers' cost")
    p.add_argument("--drain-s", type=float, default=150.0,
                   help="how long the outputs may take to hold every acknowledged event after "
                        "a fault's load stopped (a slow machine's backlog is not a loss)")
    args = p.parse_args(argv)
    faults = [int(x) for x in args.faults.split(",") if x.strip()]
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        p.error(f"unknown faults {unknown}: choose from {sorted(FAULTS)}")

    def progress(msg: str) -> None:
        print(f"[chaos] {msg}", file=sys.stderr, flush=True)

    state = args.state or Path(tempfile.mkdtemp(prefix="driftloop-chaos-"))
    if args.topology == "ha":
        from bench.chaos_rig import start_ha_rig

        rig = start_ha_rig(state, taskmanagers=args.taskmanagers, progress=progress)
    else:
        rig = start_rig(state, taskmanagers=args.taskmanagers, flink_ha=args.flink_ha,
                        progress=progress)
    try:
        results = run_matrix(rig, faults, progress=progress, drain_s=args.drain_s)
    finally:
        rig.close()
    doc = {"faults": [r.to_dict() for r in results]}
    if args.out_json:
        args.out_json.parent.mkdir(parents=True, exist_ok=True)
        args.out_json.write_text(json.dumps(doc, indent=2))
    print(json.dumps(doc, indent=2) if args.json else table(results))
    return 0 if goals_met(results) else 1


if __name__ == "__main__":
    sys.exit(main())
