"""Knative Eventing manifests → what the local dispatcher runs (pure).

Reads the KafkaSources, PingSources, Brokers, Triggers and KafkaSinks of ``eventing/`` and
turns them into routes (topics → filter → sink, with the delivery spec and consumer
scaling) and pings. Nothing here touches Kafka or HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from driftloop.local.eventing.schedule import ScheduleError, next_fire
from driftloop.local.scaling import Scaling, ScalingError, parse_scaling

__all__ = [
    "Delivery",
    "Eventing",
    "EventingError",
    "Ping",
    "Route",
    "build_eventing",
    "invalid_record_owners",
    "load_documents",
    "load_eventing",
    "parse_delivery",
    "parse_iso_duration",
]


class EventingError(ValueError):
    """An eventing manifest the dispatcher cannot act on."""

    status = 422


_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def parse_iso_duration(text: str) -> float:
    """Seconds in an ISO 8601 duration such as ``PT0.5S`` (Knative's backoffDelay/timeout)."""
    m = _DURATION.match(text.strip())
    if not m or text.strip() in {"P", "PT"}:
        raise EventingError(f"not an ISO 8601 duration: {text!r}")
    d, h, mi, s = (float(m.group(g) or 0) for g in ("d", "h", "m", "s"))
    return d * 86400 + h * 3600 + mi * 60 + s


@dataclass(frozen=True)
class Delivery:
    """A ``delivery`` spec: how often and how patiently to retry, and whether to dead-letter."""

    retry: int = 0
    backoff_policy: str = "exponential"
    backoff_delay_s: float = 0.2
    timeout_s: float | None = None
    dead_letter: str | None = None
    """Dead-letter sink name (a KafkaSink, delivered to its topic) or None."""

    def delays(self) -> list[float]:
        """Wait before each retry: ``delay·2^n`` (exponential) or ``delay·(n+1)`` (linear)."""
        if self.backoff_policy == "linear":
            return [self.backoff_delay_s * (n + 1) for n in range(self.retry)]
        return [self.backoff_delay_s * (2**n) for n in range(self.retry)]


def parse_delivery(spec: Mapping[str, Any] | None, fallback: Delivery | None = None) -> Delivery:
    if not spec:
        return fallback or Delivery()
    dls = ((spec.get("deadLetterSink") or {}).get("ref") or {}).get("name")
    policy = str(spec.get("backoffPolicy", "exponential"))
    if policy not in {"exponential", "linear"}:
        raise EventingError(f"delivery.backoffPolicy: unknown policy {policy!r}")
    return Delivery(
        retry=int(spec.get("retry", 0)),
        backoff_policy=policy,
        backoff_delay_s=parse_iso_duration(spec["backoffDelay"])
        if spec.get("backoffDelay")
        else 0.2,
        timeout_s=parse_iso_duration(spec["timeout"]) if spec.get("timeout") else None,
        dead_letter=str(dls) if dls else None,
    )


@dataclass(frozen=True)
class Route:
    """One subscription: Kafka topics (or a broker) → filter → one sink, with its delivery."""

    name: str
    topics: tuple[str, ...]
    group: str
    sink: str
    delivery: Delivery
    filter: Mapping[str, str] = field(default_factory=dict)
    broker: str | None = None
    reply_topic: str | None = None
    """Where a subscriber's reply event goes (a trigger's broker topic); None: dropped."""
    initial_offset: str = "earliest"
    """Where a new consumer group starts: ``earliest`` or ``latest`` (KafkaSource spec)."""
    dead_letters_invalid: bool = True
    """Whether this route dead-letters records that are not CloudEvents. Of the Triggers
    on one broker topic only one does, so such a record is dead-lettered once."""
    scaling: Scaling = field(default_factory=Scaling)
    """Its consumer count, from the source's or trigger's autoscaling annotations."""


@dataclass(frozen=True)
class Ping:
    """A PingSource: a cron schedule that posts a ``dev.knative.sources.ping`` event."""

    name: str
    schedule: str
    timezone: str
    sink: str
    data: bytes
    content_type: str
    source: str


@dataclass(frozen=True)
class Eventing:
    routes: tuple[Route, ...]
    pings: tuple[Ping, ...]
    dead_letter_topics: Mapping[str, str]
    """KafkaSink name → topic."""


def _sink_name(sink: Mapping[str, Any] | None, where: str) -> tuple[str, str]:
    ref = (sink or {}).get("ref") or {}
    if not ref.get("name"):
        raise EventingError(
            f"{where}: sink.ref.name is required (uri sinks are not dispatched locally)"
        )
    return str(ref.get("kind", "Service")), str(ref["name"])


def load_documents(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every manifest document in ``directory`` (kustomization.yaml excluded), with its file."""
    docs = []
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        if path.name.startswith("kustomization"):
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict):
                docs.append((path, doc))
    return docs


def _scaling(doc: Mapping[str, Any], where: str) -> Scaling:
    try:
        return parse_scaling((doc.get("metadata") or {}).get("annotations"), where)
    except ScalingError as e:
        raise EventingError(str(e)) from e


def build_eventing(
    docs: Iterable[tuple[Path, Mapping[str, Any]]], namespace: str = "driftloop"
) -> Eventing:
    """KafkaSources, PingSources, Brokers and Triggers → local routes and pings (pure)."""
    by_kind: dict[str, list[tuple[Path, Mapping[str, Any]]]] = {}
    for path, doc in docs:
        by_kind.setdefault(str(doc.get("kind")), []).append((path, doc))
    sinks = {d["metadata"]["name"]: d["spec"]["topic"] for _, d in by_kind.get("KafkaSink", [])}
    brokers = {
        d["metadata"]["name"]: parse_delivery((d.get("spec") or {}).get("delivery"))
        for _, d in by_kind.get("Broker", [])
    }
    triggers: dict[str, list[Mapping[str, Any]]] = {}
    for _, d in by_kind.get("Trigger", []):
        triggers.setdefault(d["spec"]["broker"], []).append(d)

    routes: list[Route] = []
    for path, d in by_kind.get("KafkaSource", []):
        name, spec = d["metadata"]["name"], d["spec"]
        where = f"{path.name}: KafkaSource/{name}"
        kind, sink = _sink_name(spec.get("sink"), where)
        group = str(spec.get("consumerGroup") or f"knative-kafka-source-{name}")
        topics = tuple(spec["topics"])
        delivery = parse_delivery(spec.get("delivery"))
        initial = str(spec.get("initialOffset", "latest")).lower()
        if initial not in {"earliest", "latest"}:
            raise EventingError(f"{where}: initialOffset must be earliest or latest")
        if kind == "Broker":
            if sink not in brokers:
                raise EventingError(f"{where}: sink Broker {sink!r} is not defined")
            for t in triggers.get(sink, []):
                tname, tspec = t["metadata"]["name"], t["spec"]
                _kind, subscriber = _sink_name(tspec.get("subscriber"), f"Trigger/{tname}")
                attrs = dict(((tspec.get("filter") or {}).get("attributes")) or {})
                routes.append(
                    Route(
                        name=f"{name}/{tname}",
                        topics=topics,
                        group=f"{group}.{tname}",
                        sink=subscriber,
                        delivery=parse_delivery(tspec.get("delivery"), brokers[sink]),
                        filter={str(k): str(v) for k, v in attrs.items()},
                        broker=sink,
                        reply_topic=topics[0],
                        initial_offset=initial,
                        scaling=_scaling(t, f"Trigger/{tname}"),
                    )
                )
        else:
            routes.append(
                Route(
                    name=name,
                    topics=topics,
                    group=group,
                    sink=sink,
                    delivery=delivery,
                    initial_offset=initial,
                    scaling=_scaling(d, where),
                )
            )
    for r in routes:
        if r.delivery.dead_letter and r.delivery.dead_letter not in sinks:
            raise EventingError(
                f"{r.name}: dead-letter sink {r.delivery.dead_letter!r} is not a KafkaSink here"
            )

    pings: list[Ping] = []
    for path, d in by_kind.get("PingSource", []):
        name, spec = d["metadata"]["name"], d["spec"]
        _, sink = _sink_name(spec.get("sink"), f"{path.name}: PingSource/{name}")
        schedule = str(spec.get("schedule", "* * * * *"))
        try:  # validates the schedule and its time zone
            next_fire(schedule, datetime.now(UTC), str(spec.get("timezone", "UTC")))
        except ScheduleError as e:
            raise EventingError(f"{path.name}: PingSource/{name}: {e}") from e
        data = spec.get("data", "")
        pings.append(
            Ping(
                name=name,
                schedule=schedule,
                timezone=str(spec.get("timezone", "UTC")),
                sink=sink,
                data=str(data).encode(),
                content_type=str(spec.get("contentType", "application/json")),
                source=f"/apis/v1/namespaces/{namespace}/pingsources/{name}",
            )
        )
    return Eventing(tuple(routes), tuple(pings), sinks)


def invalid_record_owners(routes: Sequence[Route]) -> set[str]:
    """Routes that dead-letter records that are not CloudEvents: every direct route, and
    per broker source (same topics) one Trigger route, the first with a dead-letter sink.

    On a cluster the broker's ingress refuses such records; locally every Trigger reads the
    topic, and each would dead-letter the same record once more.
    """
    owners: set[str] = set()
    groups: dict[tuple[str, tuple[str, ...]], list[Route]] = {}
    for r in routes:
        if r.broker is None:
            owners.add(r.name)
        else:
            groups.setdefault((r.broker, r.topics), []).append(r)
    for members in groups.values():
        with_sink = [r for r in members if r.delivery.dead_letter]
        owners.add((with_sink or members)[0].name)
    return owners


def load_eventing(directory: Path) -> Eventing:
    return build_eventing(load_documents(directory))
