"""The Kafka brokers of a running local stack, for fault drills: which broker runs where,
which one leads a partition, killing a broker and starting it again, waiting for the
replicas to catch up.

Every function takes the stack's settings (its ``state_dir`` names the stack; the topology
it was started with is read back from its ``stack.json``). Brokers are named by their KRaft
node id: 1 in the light topology, 1, 2 and 3 in the 'ha' one (components kafka-1..3).
A broker is started again by the stack itself (``Stack.start_component``: the same
preparation, command line and readiness check as ``driftloop up``), on its own data.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from driftloop.errors import StackError
from driftloop.local.process import pid_alive, wait_until

if TYPE_CHECKING:
    from driftloop.local.stack import Stack
    from driftloop.settings import Settings

__all__ = [
    "BrokerProcess",
    "PartitionState",
    "brokers",
    "cluster_settings",
    "kill_broker",
    "kill_brokers",
    "leader",
    "partitions",
    "restart_broker",
    "wait_brokers",
    "wait_isr",
]


@dataclass(frozen=True)
class BrokerProcess:
    """One broker of the stack: its component, KRaft node id, process and listener."""

    name: str
    node_id: int
    pid: int | None
    """The running process, None when it is not running."""
    host: str
    port: int
    controller_port: int

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class PartitionState:
    """What the cluster's metadata says of one partition (node ids; leader -1: none)."""

    topic: str
    partition: int
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


def _stack(settings: Settings) -> Stack:
    from driftloop.local.stack import Stack

    return Stack(settings)


def cluster_settings(settings: Settings) -> Settings:
    """The stack's settings with the topology it runs and every broker as bootstrap
    servers: what clients of the drill use (they reach the cluster with a broker down)."""
    from driftloop.local.components.kafka import bootstrap_for

    recorded = _stack(settings).recorded_settings()
    return recorded.model_copy(update={"kafka_bootstrap": bootstrap_for(recorded)})


def brokers(settings: Settings) -> list[BrokerProcess]:
    """The stack's brokers in node-id order, each with its pid while it runs."""
    from driftloop.local.components.kafka import broker_name, brokers_for

    stack = _stack(settings)
    recorded = stack.recorded_settings()
    pids = {str(r["name"]): int(r["pid"]) for r in stack.running()}
    return [
        BrokerProcess(
            name=broker_name(recorded, b),
            node_id=b.node_id,
            pid=pids.get(broker_name(recorded, b)),
            host=b.host,
            port=b.port,
            controller_port=b.controller_port,
        )
        for b in brokers_for(recorded)
    ]


def _broker(settings: Settings, node_id: int) -> BrokerProcess:
    for b in brokers(settings):
        if b.node_id == node_id:
            return b
    raise StackError(f"the stack has no Kafka broker with node id {node_id}")


def _admin(settings: Settings) -> Any:
    from kafka.admin import KafkaAdminClient

    from driftloop import bus

    return KafkaAdminClient(**bus.client_config(cluster_settings(settings), "drill-admin"),
                            request_timeout_ms=10_000)


def _describe(settings: Settings, topic: str, timeout_s: float) -> list[dict[str, Any]]:
    """The topic's metadata; retried while a request lands on a broker that just died
    (the client's cached metadata still names it)."""
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = _admin(settings)
            try:
                return list(admin.describe_topics([topic]))
            finally:
                admin.close()
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def partitions(settings: Settings, topic: str, timeout_s: float = 30.0) -> list[PartitionState]:
    """Leader, replicas and in-sync replicas of every partition of ``topic`` (leader -1:
    none; a dead leader may still be named until the controller notices)."""
    described = _describe(settings, topic, timeout_s)
    out = []
    for t in described:
        if t.get("error_code", 0) != 0:
            raise StackError(f"describing topic {topic} failed (error code {t['error_code']})")
        for p in t.get("partitions", []):
            out.append(PartitionState(topic, int(p["partition_index"]), int(p["leader_id"]),
                                      tuple(int(r) for r in p["replica_nodes"]),
                                      tuple(int(r) for r in p["isr_nodes"])))
    return sorted(out, key=lambda p: p.partition)


def leader(settings: Settings, topic: str, partition: int) -> BrokerProcess:
    """The broker that leads ``topic``/``partition`` now."""
    for p in partitions(settings, topic):
        if p.partition == partition:
            if p.leader < 0:
                raise StackError(f"{topic}/{partition} has no leader")
            return _broker(settings, p.leader)
    raise StackError(f"{topic} has no partition {partition}")


def kill_broker(settings: Settings, node_id: int, sig: int = signal.SIGKILL) -> BrokerProcess:
    """Send ``sig`` (SIGKILL: no clean shutdown) to broker ``node_id`` and wait until its
    process is gone; return the broker as it was (its pid)."""
    broker = _broker(settings, node_id)
    if broker.pid is None:
        raise StackError(f"{broker.name} is not running")
    pid = broker.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)  # the stack starts each component in a process group of its own

    def gone() -> bool:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped when it is this process's child
        return not pid_alive(pid)

    wait_until(gone, timeout_s=30, what=f"{broker.name} (pid {pid}) to exit", interval_s=0.1)
    return broker


def kill_brokers(settings: Settings, node_ids: Iterable[int],
                 sig: int = signal.SIGKILL) -> list[BrokerProcess]:
    """``kill_broker`` each of ``node_ids``, one after the other without waiting between."""
    return [kill_broker(settings, n, sig) for n in node_ids]


def restart_broker(settings: Settings, node_id: int, timeout_s: float = 120.0) -> BrokerProcess:
    """Start broker ``node_id`` again through the stack (same data, same ports) and wait
    until it serves clients (its listener is open: the quorum has a leader and it caught up
    with the metadata). Its partitions' replicas may still be catching up: ``wait_isr``."""
    broker = _broker(settings, node_id)
    stack = _stack(settings)
    stack.start_component(broker.name)
    from driftloop.local.process import tcp_open

    wait_until(lambda: tcp_open(broker.host, broker.port), timeout_s=timeout_s,
               what=f"{broker.name} to serve clients")
    return _broker(settings, node_id)


def wait_brokers(settings: Settings, count: int | None = None, timeout_s: float = 120.0) -> None:
    """Wait until ``count`` brokers (default: all of the stack's) are registered."""
    want = count if count is not None else len(brokers(settings))

    def registered() -> bool:  # a failed request (a broker just died) counts as not yet
        admin = _admin(settings)
        try:
            return len(admin.describe_cluster().get("brokers", [])) >= want
        finally:
            admin.close()

    wait_until(registered, timeout_s=timeout_s, what=f"{want} Kafka brokers", interval_s=1.0)


def wait_isr(settings: Settings, topic: str, size: int | None = None,
             partition_ids: Sequence[int] | None = None, timeout_s: float = 180.0) -> None:
    """Wait until every partition of ``topic`` (or those in ``partition_ids``) has a leader
    and ``size`` in-sync replicas (default: all its replicas)."""

    def caught_up() -> bool:
        states = [p for p in partitions(settings, topic)
                  if partition_ids is None or p.partition in partition_ids]
        return bool(states) and all(
            p.leader >= 0 and len(p.isr) >= (size if size is not None else len(p.replicas))
            for p in states
        )

    try:
        wait_until(caught_up, timeout_s=timeout_s, what=f"the in-sync replicas of {topic}",
                   interval_s=1.0)
    except StackError as e:
        try:
            now: object = partitions(settings, topic)
        except Exception as why:
            now = why
        raise StackError(f"{e}; now: {now}") from None
