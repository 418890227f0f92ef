"""The processes bench/chaos.py injects faults into, each started, SIGKILLed and restarted
the way a supervisor would (Kubernetes restarts a killed pod; here the bench does).

``Rig`` holds them: the Kafka broker, the S3 server, the Flink session cluster with the
application (join and archive) submitted to it, feedback-intake under functions-framework,
the dispatcher delivering ``driftloop.feedback`` to a sink that materialises each event
once (create-if-absent in the blob store, keyed by its (source, id)). ``Rig.start`` starts
all of them on free loopback ports; the bounded test builds a ``Rig`` around the test
session's servers instead (``FlinkSession.adopt``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr

from driftloop import topics
from driftloop.blob import BlobStore, open_store
from driftloop.local.components import ComponentSpec
from driftloop.local.components.flink import argv as flink_argv
from driftloop.local.components.flink import cluster_components, settings_env
from driftloop.local.flink_cluster import rest_get
from driftloop.local.process import free_port, free_port_run, http_ok, spawn, stop_pid, wait_until
from driftloop.settings import PROJECT_ROOT, Settings

INTAKE_SOURCE = PROJECT_ROOT / "functions" / "feedback-intake" / "main.py"


def sigkill(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL the process group (a crash: no clean shutdown, no final flush) and reap it."""
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


@dataclass
class Service:
    """One process of the rig: its command line, its readiness check, and its log."""

    name: str
    argv: Sequence[str]
    health: Callable[[], bool]
    log: Path
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    start_timeout_s: float = 60.0
    proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True) -> None:
        proc = spawn(self.argv, log_path=self.log, env=dict(self.env), cwd=self.cwd)
        self.proc = proc
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout_s: float | None = None) -> None:
        proc = self.proc
        assert proc is not None
        wait_until(self.health, timeout_s=timeout_s or self.start_timeout_s, what=self.name,
                   alive=lambda: proc.poll() is None, log_path=self.log)

    def kill(self) -> None:
        sigkill(self.proc)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc.pid, timeout_s=15)
            self.proc = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


# --------------------------------------------------------------------------- Flink


class FlinkSession:
    """The session cluster (JobManager, TaskManagers) and the submitter of the driftloop
    application; ``procs`` maps component names (``flink-jobmanager``,
    ``flink-taskmanager-<n>``) to their processes."""

    def __init__(self, settings: Settings, procs: dict[str, subprocess.Popen[bytes]] | None = None,
                 submitter: subprocess.Popen[bytes] | None = None) -> None:
        self.settings = settings.model_copy(update={"flink_target": "session"})
        self.specs: dict[str, ComponentSpec] = {
            s.name: s for s in cluster_components(self.settings)}
        self.procs = procs if procs is not None else {}
        self.submitter = submitter
        self.ready = self.settings.state_dir / "flink" / "ready.json"
        self.rest = f"http://127.0.0.1:{self.settings.flink_rest_port}"

    def log(self, name: str) -> Path:
        return self.settings.state_dir / "flink" / f"{name}.log"

    def start_process(self, name: str, timeout_s: float = 180.0) -> None:
        spec = self.specs[name]
        if spec.prepare is not None:  # the JobManager's and ZooKeeper's: conf/ and lib/
            spec.prepare()
        proc = spawn(spec.argv, log_path=self.log(name), env={**os.environ, **spec.env},
                     cwd=spec.cwd)
        self.procs[name] = proc
        wait_until(spec.health, timeout_s=timeout_s, what=name,
                   alive=lambda: proc.poll() is None, log_path=self.log(name))

    def kill_process(self, name: str) -> None:
        sigkill(self.procs.pop(name, None))

    def start(self, timeout_s: float = 240.0) -> None:
        for name in self.specs:
            if name not in self.procs:
                self.start_process(name)
        self.submit(timeout_s)

    def submit(self, timeout_s: float = 240.0) -> None:
        """Start the submitter: it adopts the running job, or submits the application from
        the newest retained checkpoint."""
        self.ready.unlink(missing_ok=True)
        env = {**settings_env(self.settings), "PYTHONPATH": str(PROJECT_ROOT)}
        log = self.settings.state_dir / "flink" / "app.log"
        proc = spawn(flink_argv(self.settings, self.ready), log_path=log, env=env,
                     cwd=PROJECT_ROOT)
        self.submitter = proc
        wait_until(self.ready.exists, timeout_s=timeout_s, what="flink application",
                   alive=lambda: proc.poll() is None, log_path=log)

    @property
    def job(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.ready.read_text())
        return body

    def job_running(self) -> bool:
        got = rest_get(self.rest, f"/jobs/{self.job['job_id']}")
        return isinstance(got, dict) and got.get("state") == "RUNNING"

    @property
    def ha(self) -> bool:
        """JobManager high availability (the 'ha' topology): a killed JobManager's job
        comes back with the same id from the HA store."""
        return self.settings.topology == "ha"

    def wait_standby_runs(self, job_id: str, timeout_s: float) -> tuple[float, float]:
        """Seconds until the standby JobManager answers with ``job_id`` (the only
        JobManager alive: it leads and recovered the job), and until all of that job's
        tasks run."""
        from driftloop.local.flink_cluster import job_summaries, rest_get, rest_urls

        standby = rest_urls(self.settings)[-1]

        def runs() -> bool:
            job = rest_get(standby, f"/jobs/{job_id}")
            tasks = job.get("vertices", []) if isinstance(job, dict) else []
            return bool(tasks) and all(v.get("status") == "RUNNING" for v in tasks)

        t0 = time.monotonic()
        wait_until(lambda: any(str(j["id"]) == job_id for j in job_summaries(standby) or []),
                   timeout_s=timeout_s, what="the standby JobManager leading the job")
        led = time.monotonic() - t0
        wait_until(runs, timeout_s=timeout_s, what="the job's tasks running on the standby")
        return led, time.monotonic() - t0

    def active_jobs(self) -> list[str]:
        """Ids of the cluster's jobs that are not finished (a second copy would show here)."""
        from driftloop.local.flink_cluster import job_summaries

        return [str(j["id"]) for j in job_summaries(self.rest) or []]

    def taskmanagers(self) -> list[str]:
        return sorted(n for n in self.specs if n.startswith("flink-taskmanager-"))

    def busy_taskmanager(self) -> str:
        """The TaskManager running the job's tasks (killing an idle one proves nothing)."""
        job = rest_get(self.rest, f"/jobs/{self.job['job_id']}")
        hosts: set[str] = set()
        for v in (job or {}).get("vertices", []):
            got = rest_get(self.rest, f"/jobs/{self.job['job_id']}/vertices/{v['id']}/taskmanagers")
            for tm in (got or {}).get("taskmanagers", []):
                hosts.add(str(tm.get("taskmanager-id") or tm.get("resource-id") or ""))
        for name in self.taskmanagers():
            if name.removeprefix("flink-") in hosts:
                return name
        return self.taskmanagers()[0]

    def stop(self) -> None:
        if self.submitter is not None:
            stop_pid(self.submitter.pid, timeout_s=10)
            self.submitter = None
        for name in reversed(list(self.procs)):
            stop_pid(self.procs.pop(name).pid, timeout_s=10)


# --------------------------------------------------------------------------- dispatcher sink


class MaterialisingSink:
    """The dispatcher's downstream: every delivered CloudEvent is written once to the blob
    store under the digest of its (source, id), create-if-absent. A redelivery (at least
    once) finds the object and is counted, never written twice."""

    PREFIX = "chaos/dispatched/"

    def __init__(self, store: BlobStore, work_s: float = 0.005) -> None:
        self.store = store
        self.work_s = work_s
        """Time each delivery takes besides the write (a function doing its work): a kill
        then finds deliveries in flight and offsets not yet committed."""
        self.inflight = 0
        self.delivered_at: list[float] = []
        self._redelivered: Counter[str] = Counter()
        self._first: dict[str, dict[tuple[str, str], float]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @staticmethod
    def folder(source: str) -> str:
        return f"{MaterialisingSink.PREFIX}{hashlib.sha256(source.encode()).hexdigest()[:24]}/"

    @staticmethod
    def key(source: str, id_: str) -> str:
        digest = hashlib.sha256(json.dumps([source, id_]).encode()).hexdigest()
        return f"{MaterialisingSink.folder(source)}{digest}.json"

    def deliver(self, source: str, id_: str, body: bytes) -> None:
        created = self.store.put_if_absent(
            self.key(source, id_),
            json.dumps({"source": source, "id": id_, "data": body.decode(errors="replace")},
                       ).encode())
        now = time.time()
        with self._lock:
            self.delivered_at.append(now)
            if created:
                self._first.setdefault(source, {}).setdefault((source, id_), now)
            else:
                self._redelivered[source] += 1

    def start(self) -> str:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                source, id_ = self.headers.get("ce-source"), self.headers.get("ce-id")
                status = 200
                with sink._lock:
                    sink.inflight += 1
                try:
                    if not source or not id_:
                        status = 400
                    else:
                        time.sleep(sink.work_s)
                        sink.deliver(source, id_, body)
                except Exception:
                    status = 503  # the store is down: the dispatcher retries
                finally:
                    with sink._lock:
                        sink.inflight -= 1
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}"

    def seen(self, source: str, candidates: Iterable[tuple[str, str]] = ()
             ) -> Counter[tuple[str, str]]:
        """The (source, id)s of ``source`` the store holds, from one listing: each is the
        object named by its digest, so one object per (source, id) by construction; the
        ``candidates`` (plus those the sink created) name the digests. An object that
        names none of them is read to say what it holds."""
        listed = set(self.store.list(self.folder(source)))
        out: Counter[tuple[str, str]] = Counter()
        for pair in {*candidates, *self.first_seen(source)}:
            k = self.key(*pair)
            if k in listed:
                out[pair] += 1
                listed.discard(k)
        for k in listed:
            obj = json.loads(self.store.get(k))
            out[(str(obj["source"]), str(obj["id"]))] += 1
        return out

    def first_seen(self, source: str) -> dict[tuple[str, str], float]:
        with self._lock:
            return dict(self._first.get(source, {}))

    def redelivered_of(self, source: str) -> int:
        return self._redelivered[source]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


def write_eventing(directory: Path, sink: str) -> Path:
    """One KafkaSource: ``driftloop.feedback`` → ``sink`` (at least once, retries)."""
    directory.mkdir(parents=True, exist_ok=True)
    doc = {
        "apiVersion": "sources.knative.dev/v1",
        "kind": "KafkaSource",
        "metadata": {"name": "chaos-feedback"},
        "spec": {
            "consumerGroup": f"chaos-{os.getpid()}-{int(time.time())}",
            "bootstrapServers": ["placeholder:9092"],
            "topics": [topics.FEEDBACK],
            "delivery": {"retry": 20, "backoffPolicy": "exponential", "backoffDelay": "PT0.2S",
                         "deadLetterSink": {"ref": {"apiVersion": "eventing.knative.dev/v1alpha1",
                                                    "kind": "KafkaSink", "name": "deadletter"}}},
            "sink": {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                             "name": sink}},
        },
    }
    dead_letter = {"apiVersion": "eventing.knative.dev/v1alpha1", "kind": "KafkaSink",
                   "metadata": {"name": "deadletter"},
                   "spec": {"topic": topics.DEADLETTER, "bootstrapServers": ["placeholder:9092"]}}
    (directory / "10-kafkasink-deadletter.yaml").write_text(
        yaml.safe_dump(dead_letter, sort_keys=False))
    (directory / "30-kafkasource-chaos-feedback.yaml").write_text(
        yaml.safe_dump(doc, sort_keys=False))
    return directory


# --------------------------------------------------------------------------- the rig


@dataclass
class Rig:
    """What the faults act on; ``kafka`` and ``s3`` are ``Service`` or adapters with the same
    ``kill``/``start``/``stop`` (the test session's fixtures)."""

    settings: Settings
    flink: FlinkSession
    intake: Service
    dispatcher: Service
    sink: MaterialisingSink
    s3: Any
    kafka: Any = None
    kafka_cluster: Any = None
    """The HA topology's brokers (driftloop.local.kafka_cluster), when the rig has three."""
    canary: Any = None
    """MLServer, Prometheus and the promote service (bench.chaos_canary), once a canary
    fault asked for them."""
    owned: list[Any] = field(default_factory=list)

    @property
    def store(self) -> BlobStore:
        return open_store(self.settings.resolved_blob_url, self.settings)

    def close(self) -> None:
        for part in reversed(self.owned):
            with contextlib.suppress(Exception):
                (part.close if hasattr(part, "close") else part.stop)()


def intake_service(settings: Settings, log: Path) -> Service:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    return Service(
        name="feedback-intake",
        argv=[str(Path(sys.executable).parent / "functions-framework"), "--target", "intake",
              "--source", str(INTAKE_SOURCE), "--host", "127.0.0.1", "--port", str(port)],
        health=lambda: http_ok(f"{url}/healthz"),
        log=log,
        env={"DRIFTLOOP_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
             "DRIFTLOOP_INTAKE_SEND_TIMEOUT_S": "5", "DRIFTLOOP_INTAKE_RETRY_AFTER_S": "1",
             "PYTHONUNBUFFERED": "1"},
        cwd=PROJECT_ROOT,
        start_timeout_s=60,
    )


def intake_url(intake: Service) -> str:
    return f"http://127.0.0.1:{intake.argv[-1]}"


def dispatcher_service(settings: Settings, eventing: Path, sink_url: str, log: Path) -> Service:
    state = settings.state_dir / "dispatcher"
    beat = state / "dispatcher.json"

    def healthy() -> bool:
        try:
            return time.time() - float(json.loads(beat.read_text())["updated"]) < 10
        except (OSError, ValueError, KeyError):
            return False

    return Service(
        name="dispatcher",
        argv=[sys.executable, "-m", "driftloop.local.eventing", "--eventing", str(eventing),
              "--endpoint", f"chaos-sink={sink_url}"],
        health=healthy,
        log=log,
        env={"DRIFTLOOP_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
             "DRIFTLOOP_STATE_DIR": str(state), "DRIFTLOOP_DISPATCHER_METRICS_PORT": "0",
             "DRIFTLOOP_DISPATCHER_POLL_MS": "100", "PYTHONUNBUFFERED": "1"},
        cwd=PROJECT_ROOT,
        start_timeout_s=60,
    )


def flink_settings(base: Settings, *, taskmanagers: int) -> dict[str, Any]:
    """The Flink application's settings for the chaos run: join and archive, checkpoints
    every second on the S3 server, archive files rolled every second."""
    return {
        "flink_pipelines": ("join", "archive"),
        "archive_engine": "flink",
        "flink_taskmanagers": taskmanagers,
        "flink_checkpoint_interval_ms": 1000,
        "flink_archive_roll_s": 1.0,
        "flink_bundle_time_ms": 50,
        **({} if base.flink_checkpoint_dir else
           {"flink_checkpoint_dir": base.resolved_blob_url.rsplit("/", 1)[0] + "/checkpoints"}),
    }


def _s3_and_settings(base: Settings, state: Path, bootstrap: str, taskmanagers: int,
                     owned: list[Any], progress: Callable[[str], object],
                     topology: str = "light") -> tuple[Service, Settings]:
    """The rig's S3 server (started, its bucket made, added to ``owned``) and the settings
    of a stack on ``bootstrap`` with Flink checkpoints on it; ``topology`` 'ha' adds the
    JobManager's high availability (ZooKeeper on a free port, HA store on the S3 server)."""
    from driftloop.local.s3 import S3Server

    server = S3Server(binary=base.cache_dir / "bin" / "versitygw", root_dir=state / "s3",
                      port=free_port())
    server.prepare()
    s3 = Service("s3", server.argv(), server.healthy, state / "s3.log", env=server.env(),
                 start_timeout_s=30)
    progress("starting the S3 server")
    s3.start()
    owned.append(s3)
    import boto3
    from botocore.config import Config

    boto3.client("s3", endpoint_url=server.endpoint_url, aws_access_key_id=server.access_key,
                 aws_secret_access_key=server.secret_key, region_name=server.region,
                 config=Config(s3={"addressing_style": "path"})).create_bucket(Bucket="chaos")
    settings = Settings(
        kafka_bootstrap=bootstrap, state_dir=state, blob_url="s3://chaos/lake",
        s3_endpoint_url=server.endpoint_url, s3_access_key_id=server.access_key,
        s3_secret_access_key=SecretStr(server.secret_key), flink_rest_port=free_port(),
        flink_jobmanager_rpc_port=free_port(), flink_metrics_port=free_port_run(taskmanagers + 2),
        flink_checkpoint_dir="s3://chaos/checkpoints",
        topology=topology, flink_zookeeper_port=free_port(),
        flink_standby_rest_port=free_port(),
        **{k: v for k, v in flink_settings(base, taskmanagers=taskmanagers).items()
           if k != "flink_checkpoint_dir"},
    )
    return s3, settings


def start_rig(state: Path, *, taskmanagers: int = 2, flink_ha: bool = False,
              progress: Callable[[str], object] = print) -> Rig:
    """Everything on free loopback ports under ``state``: one Kafka broker, the S3 server
    (the blob store and Flink's checkpoints), Flink (``taskmanagers`` TaskManagers; with
    ``flink_ha`` the 'ha' topology's JobManager HA), feedback-intake, the dispatcher and its
    sink."""
    from driftloop.local.components.kafka import create_topics
    from driftloop.local.kafka import KafkaBroker

    state.mkdir(parents=True, exist_ok=True)
    base = Settings()
    owned: list[Any] = []
    try:
        broker = KafkaBroker(libs_dir=base.cache_dir / "kafka" / "libs", data_dir=state / "kafka",
                             port=free_port(), controller_port=free_port(), heap="512m")
        broker.format_storage()
        kafka = Service("kafka", broker.argv(), broker.healthy, state / "kafka.log",
                        start_timeout_s=90)
        progress("starting kafka")
        kafka.start()
        owned.append(kafka)
        create_topics(Settings(kafka_bootstrap=broker.bootstrap))

        s3, settings = _s3_and_settings(base, state, broker.bootstrap, taskmanagers, owned,
                                        progress, topology="ha" if flink_ha else "light")
        return assemble(settings, s3=s3, kafka=kafka, owned=owned, progress=progress)
    except BaseException:
        for part in reversed(owned):
            with contextlib.suppress(Exception):
                part.stop()
        raise


def assemble(settings: Settings, *, s3: Any, kafka: Any, owned: list[Any],
             flink: FlinkSession | None = None,
             progress: Callable[[str], object] = print) -> Rig:
    """The rig around running Kafka and S3 servers: Flink (``flink``, or started here),
    feedback-intake, the dispatcher and its sink, all on ``settings``."""
    state = settings.state_dir
    if flink is None:
        flink = FlinkSession(settings)
        progress("starting the Flink session cluster and the application")
        owned.append(flink)  # before start: a start that fails is stopped with the rest
        flink.start()
    intake = intake_service(settings, state / "intake.log")
    progress("starting feedback-intake")
    intake.start()
    owned.append(intake)
    sink = MaterialisingSink(open_store(settings.resolved_blob_url, settings))
    sink_url = sink.start()
    owned.append(sink)
    dispatcher = dispatcher_service(settings, write_eventing(state / "eventing", "chaos-sink"),
                                    sink_url, state / "dispatcher.log")
    progress("starting the dispatcher")
    dispatcher.start()
    owned.append(dispatcher)
    return Rig(settings=settings, flink=flink, intake=intake, dispatcher=dispatcher, sink=sink,
               s3=s3, kafka=kafka, owned=owned)


class HaKafka:
    """The HA topology's three brokers, started by ``driftloop.local.stack.Stack`` (the
    stack's own components kafka-1..3, replication factor 3, min.insync.replicas 2) in the
    rig's state folder; ``settings`` is what ``driftloop.local.kafka_cluster`` takes."""

    def __init__(self, state: Path) -> None:
        from driftloop.local.stack import Stack
        from driftloop.retrain.stackrun import loop_env

        env = loop_env(state, DRIFTLOOP_TOPOLOGY="ha",
                       DRIFTLOOP_COMPONENTS="kafka-1,kafka-2,kafka-3")
        self.settings = Settings.from_env(env)
        self.stack = Stack(self.settings)

    def start(self) -> None:
        self.stack.up()

    @property
    def bootstrap(self) -> str:
        from driftloop.local import kafka_cluster

        return kafka_cluster.cluster_settings(self.settings).kafka_bootstrap

    def stop(self) -> None:
        self.stack.down()


def start_ha_rig(state: Path, *, taskmanagers: int = 2,
                 progress: Callable[[str], object] = print) -> Rig:
    """``start_rig`` on the HA topology: three KRaft brokers instead of one, and Flink's
    JobManager high availability (ZooKeeper)."""

    state.mkdir(parents=True, exist_ok=True)
    base = Settings()
    owned: list[Any] = []
    try:
        kafka = HaKafka(state / "ha")
        progress("starting three Kafka brokers (topology ha)")
        kafka.start()
        owned.append(kafka)
        s3, settings = _s3_and_settings(base, state, kafka.bootstrap, taskmanagers, owned,
                                        progress, topology="ha")
        rig = assemble(settings, s3=s3, kafka=kafka, owned=owned, progress=progress)
        rig.kafka_cluster = kafka.settings
        return rig
    except BaseException:
        for part in reversed(owned):
            with contextlib.suppress(Exception):
                part.stop()
        raise
