"""A real Apache Kafka broker in KRaft mode (combined broker + controller) on loopback.

The jars come from Maven Central through ``infra/kafka/pom.xml`` (``make setup``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from driftloop.errors import StackError
from driftloop.local.process import tcp_open
from driftloop.settings import PROJECT_ROOT

LOG4J_CONFIG = PROJECT_ROOT / "infra" / "kafka" / "log4j2.properties"
JMX_RULES = PROJECT_ROOT / "infra" / "kafka" / "jmx-exporter.yml"
JMX_VERSION_FILE = PROJECT_ROOT / "infra" / "kafka" / "jmx-exporter.version"


def jmx_agent(cache_dir: Path) -> Path | None:
    """The Prometheus JMX exporter agent jar ``make setup`` fetched, or None."""
    try:
        version = JMX_VERSION_FILE.read_text().strip()
    except FileNotFoundError:
        return None
    jar = cache_dir / "kafka" / "agent" / f"jmx_prometheus_javaagent-{version}.jar"
    return jar if jar.is_file() else None


def java_binary() -> str:
    """The ``java`` on PATH; a clear error when there is none."""
    java = shutil.which("java")
    if java is None:
        raise StackError("Java not found on PATH: Kafka needs a Java 17+ runtime (make setup)")
    return java


@dataclass(frozen=True)
class KafkaBroker:
    """Files and command line of one KRaft broker (combined broker + controller): a
    single-node cluster by default, or node ``node_id`` of a cluster whose controller
    quorum is ``voters`` (every node's ``(node id, controller port)``; all share the cluster
    id kept in ``cluster_id_file``)."""

    libs_dir: Path
    data_dir: Path
    port: int
    controller_port: int
    heap: str = "768m"
    host: str = "127.0.0.1"
    metrics_port: int = 0
    """Where the JMX exporter agent serves /metrics (0, or no ``agent``: not served)."""
    agent: Path | None = None
    node_id: int = 1
    voters: tuple[tuple[int, int], ...] = ()
    """``(node id, controller port)`` of every controller; empty: this node alone."""
    cluster_id_file: Path | None = None
    """Where the cluster id of a multi-node cluster is kept (written by the first node
    formatted, read by the others); None: a fresh id for this single node."""
    replication: int = 1
    """Replication factor of the topics created without one and of Kafka's internal topics
    (consumer offsets, transaction state)."""
    min_insync: int = 1
    """``min.insync.replicas``: replicas that must have a record before an acks=all
    producer is answered (with fewer in sync, the write is refused: NotEnoughReplicas)."""

    @property
    def metrics(self) -> str:
        """``host:port`` of the broker's /metrics, '' when the agent is not loaded."""
        return f"{self.host}:{self.metrics_port}" if self.metrics_port and self.agent else ""

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "kraft-logs"

    def _classpath(self) -> str:
        if not self.libs_dir.is_dir() or not any(self.libs_dir.glob("kafka_2.13-*.jar")):
            raise StackError(f"Kafka jars missing in {self.libs_dir}: run make setup")
        return f"{self.libs_dir}/*"

    def _java(self, main: str, *args: str, heap: str = "256m") -> list[str]:
        return [
            java_binary(), f"-Xmx{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            "-cp", self._classpath(), main, *args,
        ]

    def write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": ",".join(
                f"{node}@{self.host}:{port}" for node, port in self.quorum
            ),
            "listeners": f"PLAINTEXT://{self.host}:{self.port},"
            f"CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.log_dir),
            "num.partitions": "3",
            "default.replication.factor": str(self.replication),
            "min.insync.replicas": str(self.min_insync),
            "unclean.leader.election.enable": "false",
            "offsets.topic.replication.factor": str(self.replication),
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": str(self.replication),
            "transaction.state.log.min.isr": str(self.min_insync),
            "share.coordinator.state.topic.replication.factor": str(self.replication),
            "share.coordinator.state.topic.min.isr": str(self.min_insync),
            "group.initial.rebalance.delay.ms": "0",
            # The nodes of a quorum start one after another; a node waits for a quorum
            # (two of three) before it registers, which on a loaded machine takes longer
            # than the 60 s default for its JVM and the next node's to come up.
            "initial.broker.registration.timeout.ms": "600000",
            "auto.create.topics.enable": "false",
            "log.flush.interval.messages": "1",
            "message.max.bytes": str(16 * 1024 * 1024),
        }
        self.config_path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def format_storage(self) -> None:
        """Write the config and format the log dir once (KRaft needs a cluster id)."""
        self.write_config()
        if (self.log_dir / "meta.properties").exists():
            return
        cluster_id = self._cluster_id()
        try:
            subprocess.run(
                # "--cluster-id=<id>": a random id may start with '-'.
                self._java("kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                           "-c", str(self.config_path), "--ignore-formatted"),
                check=True, capture_output=True, timeout=120,
            )
        except subprocess.CalledProcessError as e:
            out = (e.stdout + e.stderr).decode(errors="replace").strip().splitlines()[-1:]
            raise StackError(f"formatting Kafka storage failed: {' '.join(out)}") from e

    @property
    def quorum(self) -> tuple[tuple[int, int], ...]:
        """The controller quorum: ``voters``, or this node alone."""
        return self.voters or ((self.node_id, self.controller_port),)

    def _cluster_id(self) -> str:
        """A fresh id for a single node; the one id every node of a cluster shares."""
        if self.cluster_id_file is None:
            return _kafka_uuid()
        path = self.cluster_id_file
        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # the first node formatted writes it; O_EXCL: never two ids
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return path.read_text().strip()
        with os.fdopen(fd, "w") as out:
            out.write(_kafka_uuid())
        return path.read_text().strip()

    def argv(self) -> list[str]:
        argv = self._java("kafka.Kafka", str(self.config_path), heap=self.heap)
        if self.metrics:
            argv.insert(1, f"-javaagent:{self.agent}={self.metrics}:{JMX_RULES}")
        return argv

    def healthy(self) -> bool:
        return tcp_open(self.host, self.port)

    def controller_listening(self) -> bool:
        return tcp_open(self.host, self.controller_port)


def _kafka_uuid() -> str:
    """A Kafka cluster id: a random UUID in URL-safe base64 without padding."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
