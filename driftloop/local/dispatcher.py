"""The local dispatcher: Knative Eventing's delivery, driven by the same ``eventing/`` files.

On a cluster, KafkaSources, PingSources and a Kafka-class Broker with Triggers deliver
CloudEvents to the functions. Locally this process reads those manifests and gives the
same semantics: binary-mode HTTP, at least once, per-partition order, retries with the
source's backoff, the dead-letter topic after the last retry, offsets committed only once
a record is done (delivered with a 2xx, filtered out, or dead-lettered). A sink ``ref`` to
a Knative Service named X is delivered to the local component named X.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import yaml

from driftloop import topics as topic_names
from driftloop.events import PING, SPECVERSION, format_time
from driftloop.local.scaling import Scaler, Scaling, ScalingError, measure_lag, parse_scaling

if TYPE_CHECKING:
    from kafka import KafkaConsumer, KafkaProducer

    from driftloop.settings import Settings

log = logging.getLogger("driftloop.dispatcher")

RETRYABLE_STATUS = frozenset({404, 408, 409, 429})
"""Besides 5xx and connection errors, the statuses Knative's Kafka dispatcher retries."""

DEFAULT_PING_DELIVERY_RETRY = 3


# --------------------------------------------------------------------------- config (pure)


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
        next_fire(schedule, datetime.now(UTC), str(spec.get("timezone", "UTC")))  # validates
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


_EVERY = re.compile(r"^@every\s+(?P<n>\d+(?:\.\d+)?)(?P<u>ms|s|m|h)$")


def next_fire(schedule: str, after: datetime, timezone: str = "UTC") -> datetime:
    """Next fire time strictly after ``after``: 5-field cron (in ``timezone``) or ``@every 10s``."""
    m = _EVERY.match(schedule.strip())
    if m:
        unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group("u")]
        return after + timedelta(seconds=float(m.group("n")) * unit)
    from croniter import croniter

    try:
        zone = ZoneInfo(timezone)
    except Exception as e:
        raise EventingError(f"PingSource timezone {timezone!r}: {e}") from e
    if not croniter.is_valid(schedule):
        raise EventingError(f"PingSource schedule {schedule!r} is not a valid cron expression")
    nxt = croniter(schedule, after.astimezone(zone)).get_next(datetime)
    return nxt.astimezone(UTC)


# --------------------------------------------------------------------------- record → HTTP (pure)


def record_to_http(
    value: bytes | None, headers: Sequence[tuple[str, bytes | None]]
) -> tuple[dict[str, str], bytes, dict[str, str]]:
    """Kafka binary-mode record → (HTTP binary-mode headers, body, CloudEvent attributes).

    Structured-mode records (``application/cloudevents+json``) are forwarded as structured
    HTTP requests. Raises ``EventingError`` for a record that is not a CloudEvent.
    """
    h = {k.lower(): (v or b"").decode("utf-8", errors="replace") for k, v in headers}
    body = value or b""
    if "ce_specversion" in h:
        http = {f"ce-{k[3:]}": v for k, v in h.items() if k.startswith("ce_")}
        if "content-type" in h:
            http["content-type"] = h["content-type"]
        attrs = {k[3:]: v for k, v in h.items() if k.startswith("ce_")}
    elif h.get("content-type", "").split(";")[0].strip() == "application/cloudevents+json":
        try:
            obj = json.loads(body)
        except ValueError as e:
            raise EventingError(f"structured record is not JSON: {e}") from e
        if not isinstance(obj, dict):
            raise EventingError("structured record is not a JSON object")
        http = {"content-type": h["content-type"]}
        attrs = {k: str(v) for k, v in obj.items() if k not in {"data", "data_base64"}}
    else:
        raise EventingError("not a CloudEvent: no ce_specversion header and not structured mode")
    missing = [a for a in ("id", "source", "type") if not attrs.get(a)]
    if missing:
        raise EventingError(f"CloudEvent attributes missing: {', '.join(missing)}")
    return http, body, attrs


def matches(filter_attrs: Mapping[str, str], attrs: Mapping[str, str]) -> bool:
    """Knative Trigger ``filter.attributes``: exact match on every attribute ('' matches any)."""
    return all(v == "" or attrs.get(k) == v for k, v in filter_attrs.items())


def retryable(status: int | None) -> bool:
    """None is a connection error or timeout."""
    return status is None or status >= 500 or status in RETRYABLE_STATUS


def reply_to_kafka(
    headers: Mapping[str, str], body: bytes
) -> tuple[list[tuple[str, bytes]], bytes] | None:
    """A subscriber's binary-mode reply event as Kafka headers and value, or None."""
    h = {k.lower(): v for k, v in headers.items()}
    if not (h.get("ce-id") and h.get("ce-type") and h.get("ce-source")):
        return None
    out = [(f"ce_{k[3:]}", v.encode()) for k, v in h.items() if k.startswith("ce-")]
    if "content-type" in h:
        out.append(("content-type", h["content-type"].encode()))
    return out, body


# --------------------------------------------------------------------------- endpoints


def endpoint_url(endpoint: str) -> str:
    return endpoint if "://" in endpoint else f"http://{endpoint}"


def endpoints_from_stack(state_dir: Path) -> dict[str, str]:
    """Component name → URL from ``<state_dir>/stack.json`` (what ``driftloop up`` started)."""
    try:
        components = json.loads((state_dir / "stack.json").read_text())["components"]
    except (FileNotFoundError, ValueError, KeyError):
        return {}
    return {
        str(c["name"]): endpoint_url(str(c["endpoint"]))
        for c in components
        if c.get("endpoint") and c.get("name") not in {"kafka", "dispatcher"}
    }


# --------------------------------------------------------------------------- workers (I/O)


class _Stopped(Exception):
    pass


@dataclass
class Outcome:
    delivered: bool
    attempts: int
    status: int | None
    reason: str = ""
    reply: tuple[dict[str, str], bytes] | None = None


def delivery_token(settings: Settings) -> str | None:
    """The token deliveries carry: the first of DRIFTLOOP_FUNCTION_TOKENS, if any."""
    tokens = settings.function_token_list
    return tokens[0] if tokens else None


class Deliverer:
    """POSTs one event to one URL with the delivery spec's retries and backoff."""

    def __init__(
        self, stop: threading.Event, default_timeout_s: float, token: str | None = None
    ) -> None:
        """``token``: the bearer token every delivery carries (the control-plane functions
        refuse deliveries without one when DRIFTLOOP_FUNCTION_TOKENS is set)."""
        import httpx

        auth = {"authorization": f"Bearer {token}"} if token else None
        self._client = httpx.Client(http1=True, follow_redirects=False, headers=auth)
        self._stop = stop
        self._timeout = default_timeout_s

    def close(self) -> None:
        self._client.close()

    def deliver(self, url: str, headers: Mapping[str, str], body: bytes, d: Delivery) -> Outcome:
        import httpx

        delays = d.delays()
        attempt = 0
        while True:
            attempt += 1
            status: int | None = None
            try:
                resp = self._client.post(
                    url, headers=dict(headers), content=body, timeout=d.timeout_s or self._timeout
                )
                status = resp.status_code
                if 200 <= status < 300:
                    return Outcome(True, attempt, status, reply=(dict(resp.headers), resp.content))
                reason = f"HTTP {status}: {resp.text[:300]}"
            except httpx.HTTPError as e:
                reason = f"{type(e).__name__}: {e}"
            if not retryable(status) or attempt > len(delays):
                return Outcome(False, attempt, status, reason)
            log.info(
                "retrying %s in %.2fs (attempt %d): %s", url, delays[attempt - 1], attempt, reason
            )
            if self._stop.wait(delays[attempt - 1]):
                raise _Stopped


class DispatcherMetrics:
    """The dispatcher's own Prometheus metrics (per route), in a registry of its own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        self.delivered = Counter(
            "driftloop_dispatcher_delivered",
            "Records delivered with a 2xx.",
            ["route"],
            registry=self.registry,
        )
        self.dead_lettered = Counter(
            "driftloop_dispatcher_dead_lettered",
            "Records parked on a dead-letter topic.",
            ["route"],
            registry=self.registry,
        )
        self.truncated = Counter(
            "driftloop_dispatcher_dead_letters_truncated",
            "Dead letters whose value was cut to DRIFTLOOP_DEAD_LETTER_MAX_VALUE_BYTES.",
            ["route"],
            registry=self.registry,
        )
        self.errors = Counter(
            "driftloop_dispatcher_errors",
            "Failures of the dispatcher itself (Kafka reads, replies, dead letters).",
            ["route"],
            registry=self.registry,
        )
        self.route_up = Gauge(
            "driftloop_dispatcher_route_up",
            "1 while a route makes progress, 0 while it fails and retries.",
            ["route"],
            registry=self.registry,
        )


RECORD_ATTEMPTS = 3
"""Tries of a reply or a dead letter before the record is parked by reference only."""
MAX_ROUTE_BACKOFF_S = 30.0


class RouteWorker(threading.Thread):
    """One consumer group per route: poll, filter, deliver in partition order, commit.

    A route never dies on one record: a reply or dead letter that cannot be written is
    retried, then the record is parked by reference (no value); a failure of Kafka itself
    makes the route wait and re-read from its committed offsets, marked failing meanwhile.
    """

    def __init__(
        self,
        route: Route,
        url: str,
        settings: Settings,
        producer: KafkaProducer,
        dead_letter_topics: Mapping[str, str],
        stop: threading.Event,
        metrics: DispatcherMetrics | None = None,
        share: tuple[int, int] = (0, 1),
    ) -> None:
        super().__init__(name=f"route-{route.name}-{share[0]}", daemon=True)
        self.share = share
        """(index, count): this consumer's part of the route's partitions."""
        self.route, self.url, self.settings = route, url, settings
        self.producer, self.dead_letter_topics, self.stop = producer, dead_letter_topics, stop
        self.metrics = metrics or DispatcherMetrics()
        self.delivered = 0
        self.dead_lettered = 0
        self.truncated = 0
        self.errors = 0
        self.failing = False
        self.last_error: str | None = None
        self.error: BaseException | None = None
        """Set only if the thread itself ended on an error it could not survive."""
        self.metrics.route_up.labels(route.name).set(1)

    def state(self) -> dict[str, Any]:
        """What the heartbeat shows of this route."""
        return {
            "name": self.route.name,
            "delivered": self.delivered,
            "dead_lettered": self.dead_lettered,
            "dead_letters_truncated": self.truncated,
            "errors": self.errors,
            "failing": self.failing or not self.is_alive(),
            "last_error": self.last_error,
        }

    def _failed(self, what: str, e: BaseException) -> None:
        self.errors += 1
        self.failing = True
        self.last_error = f"{what}: {type(e).__name__}: {e}"[:500]
        self.metrics.errors.labels(self.route.name).inc()
        self.metrics.route_up.labels(self.route.name).set(0)

    def _progressed(self) -> None:
        if self.failing:
            self.failing = False
            self.metrics.route_up.labels(self.route.name).set(1)

    def run(self) -> None:
        failures = 0
        try:
            while not self.stop.is_set():
                try:
                    self._consume()
                    return
                except _Stopped:
                    return
                except Exception as e:
                    failures += 1
                    self._failed("route", e)
                    log.exception("route %s failed; retrying from its offsets", self.route.name)
                    wait = min(MAX_ROUTE_BACKOFF_S, 0.5 * 2 ** min(failures, 8))
                    if self.stop.wait(wait):
                        return
        except BaseException as e:  # pragma: no cover - interpreter shutdown and the like
            self.error = e
            raise

    def _consume(self) -> None:
        from driftloop import bus

        consumer: KafkaConsumer | None = None
        deliverer = Deliverer(self.stop, self.settings.dispatcher_timeout_s,
                              token=delivery_token(self.settings))
        try:
            consumer = bus.make_consumer(
                self.settings,
                [],
                self.route.group,
                max_poll_records=100,
                metadata_max_age_ms=5_000,
                auto_offset_reset=self.route.initial_offset,
            )
            consumer.assign(self._partitions(consumer))
            while not self.stop.is_set():
                batch = consumer.poll(timeout_ms=self.settings.dispatcher_poll_ms)
                done: dict[Any, int] = {}
                try:
                    for tp, records in batch.items():
                        for rec in records:
                            self._handle_one(rec, deliverer)
                            self._progressed()
                            done[tp] = rec.offset + 1
                            self._commit(consumer, {tp: done[tp]}, sync=False)
                finally:
                    if done:  # the batch's progress is durable before the next poll
                        self._commit(consumer, done, sync=True)
        finally:
            deliverer.close()
            if consumer is not None:
                consumer.close(autocommit=False)

    def _partitions(self, consumer: KafkaConsumer) -> list[Any]:
        """Every partition of the route's topics, waiting for topics that do not exist yet.

        One local dispatcher owns each route, so partitions are assigned directly (no group
        rebalance to wait for); offsets are still committed under the route's group id.
        """
        from kafka.structs import TopicPartition

        while True:
            found = {t: consumer.partitions_for_topic(t) for t in self.route.topics}
            if all(found.values()):
                every = [TopicPartition(t, p) for t, ps in found.items() for p in sorted(ps or ())]
                return every[self.share[0] :: self.share[1]]
            missing = [t for t, ps in found.items() if not ps]
            log.info("route %s: waiting for topics %s", self.route.name, missing)
            if self.stop.wait(1.0):
                raise _Stopped

    @staticmethod
    def _commit(consumer: KafkaConsumer, offsets: Mapping[Any, int], *, sync: bool) -> None:
        """Commit offsets of records that are done. Each record's commit is sent at once
        (asynchronously, in order); the batch's last offsets are committed synchronously."""
        from kafka.structs import OffsetAndMetadata

        commit = {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()}
        if sync:
            consumer.commit(commit)
        else:
            consumer.commit_async(commit)

    def _handle_one(self, rec: Any, deliverer: Deliverer) -> None:
        """One record, whatever it holds: an error of the record itself (a header HTTP cannot
        carry, …) parks it; an error of Kafka propagates (the route waits and re-reads)."""
        from kafka.errors import KafkaError

        try:
            self._handle(rec, deliverer)
        except (_Stopped, KafkaError):
            raise
        except Exception as e:
            self._failed("record", e)
            log.exception("route %s: record %s/%d@%d", self.route.name, rec.topic,
                          rec.partition, rec.offset)
            self._park(
                rec,
                f"{self.route.name}: the dispatcher cannot deliver this record: "
                f"{type(e).__name__}: {e}",
            )

    def _handle(self, rec: Any, deliverer: Deliverer) -> None:
        try:
            http, body, attrs = record_to_http(rec.value, rec.headers)
        except EventingError as e:
            if self.route.dead_letters_invalid:
                self._park(rec, f"{self.route.name}: {e}")
            return
        if not matches(self.route.filter, attrs):
            return
        outcome = deliverer.deliver(self.url, http, body, self.route.delivery)
        if outcome.delivered:
            self.delivered += 1
            self.metrics.delivered.labels(self.route.name).inc()
            if self.route.reply_topic and outcome.reply is not None:
                reply = reply_to_kafka(*outcome.reply)
                if reply is not None:
                    try:
                        self._retrying(lambda: self._send_reply(reply), "reply")
                    except _Stopped:
                        raise
                    except Exception as e:
                        self._park(
                            rec,
                            f"delivered to {self.route.sink} ({self.route.name}) but its reply "
                            f"could not be published to {self.route.reply_topic}: "
                            f"{type(e).__name__}: {e}",
                        )
            return
        self._park(
            rec,
            f"delivery to {self.route.sink} ({self.route.name}) failed after "
            f"{outcome.attempts} attempt(s): {outcome.reason}",
            knative_error=(self.url, outcome.status),
        )

    def _send_reply(self, reply: tuple[list[tuple[str, bytes]], bytes]) -> None:
        assert self.route.reply_topic is not None
        self.producer.send(self.route.reply_topic, value=reply[1], headers=reply[0]).get(30)

    def _retrying(self, action: Callable[[], None], what: str) -> None:
        """``action`` up to RECORD_ATTEMPTS times with a short backoff; the last error raises."""
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            try:
                action()
                return
            except Exception as e:
                self._failed(what, e)
                log.warning("route %s: %s failed (attempt %d): %s", self.route.name, what,
                            attempt, e)
                if attempt == RECORD_ATTEMPTS:
                    raise
                if self.stop.wait(0.5 * 2 ** (attempt - 1)):
                    raise _Stopped from e

    def _park(
        self, rec: Any, reason: str, knative_error: tuple[str, int | None] | None = None
    ) -> None:
        """Dead-letter the record; if even that fails, dead-letter it by reference only."""
        try:
            self._retrying(lambda: self._dead_letter(rec, reason, knative_error), "dead letter")
        except _Stopped:
            raise
        except Exception as e:
            self._dead_letter(
                rec, f"{reason} (value dropped: {type(e).__name__}: {e})", knative_error,
                by_reference=True,
            )

    def _dead_letter(
        self,
        rec: Any,
        reason: str,
        knative_error: tuple[str, int | None] | None = None,
        *,
        by_reference: bool = False,
    ) -> None:
        """Park the record with its reason; a failed delivery also carries the
        ``knativeerrordest``/``knativeerrorcode`` extensions Knative adds on a cluster.
        A value over ``dead_letter_max_value_bytes`` is cut (see ``bus.dead_letter``)."""
        from driftloop import bus

        name = self.route.delivery.dead_letter
        if name is None:
            log.warning(
                "dropping record %s/%d@%d (no dead-letter sink): %s",
                rec.topic,
                rec.partition,
                rec.offset,
                reason,
            )
            return
        topic = self.dead_letter_topics.get(name, topic_names.DEADLETTER)
        headers = [(k, v or b"") for k, v in rec.headers]
        if by_reference:
            headers = [(k, v) for k, v in headers if k.startswith("ce_") and len(v) <= 1024]
        headers.append(("dl_sink", self.route.sink.encode()))
        if knative_error is not None and any(k == "ce_specversion" for k, _ in headers):
            dest, code = knative_error
            headers.append(("ce_knativeerrordest", dest.encode()))
            if code is not None:
                headers.append(("ce_knativeerrorcode", str(code).encode()))
        limit = self.settings.dead_letter_max_value_bytes
        value = None if by_reference else rec.value
        fut = bus.dead_letter(
            self.producer,
            reason=reason,
            source_topic=rec.topic,
            value=value,
            headers=headers,
            key=rec.key,
            partition=rec.partition,
            offset=rec.offset,
            max_value_bytes=limit,
            topic=topic,
        )
        fut.get(timeout=30)
        self.dead_lettered += 1
        self.metrics.dead_lettered.labels(self.route.name).inc()
        if value is not None and len(value) > limit:
            self.truncated += 1
            self.metrics.truncated.labels(self.route.name).inc()
        log.warning("dead-lettered %s/%d@%d: %s", rec.topic, rec.partition, rec.offset, reason)


def ping_event(ping: Ping, when: datetime) -> tuple[dict[str, str], bytes]:
    """The binary-mode HTTP request a PingSource sends at ``when``."""
    headers = {
        "ce-specversion": SPECVERSION,
        "ce-id": str(uuid.uuid4()),
        "ce-source": ping.source,
        "ce-type": PING,
        "ce-time": format_time(when),
        "content-type": ping.content_type,
    }
    return headers, ping.data


class PingWorker(threading.Thread):
    """Fires every PingSource on its schedule (no catch-up of missed ticks, as in Knative)."""

    def __init__(
        self,
        pings: Sequence[tuple[Ping, str]],
        stop: threading.Event,
        settings: Settings,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(name="pings", daemon=True)
        self.pings, self.stop, self.settings, self.now = pings, stop, settings, now
        self.fired: dict[str, int] = {p.name: 0 for p, _ in pings}

    def run(self) -> None:
        deliverer = Deliverer(self.stop, self.settings.dispatcher_timeout_s,
                              token=delivery_token(self.settings))
        delivery = Delivery(retry=DEFAULT_PING_DELIVERY_RETRY, backoff_delay_s=0.2)
        start = self.now()
        due = {p.name: next_fire(p.schedule, start, p.timezone) for p, _ in self.pings}
        try:
            while not self.stop.is_set() and self.pings:
                now = self.now()
                for ping, url in self.pings:
                    if due[ping.name] <= now:
                        headers, body = ping_event(ping, due[ping.name])
                        try:
                            outcome = deliverer.deliver(url, headers, body, delivery)
                        except _Stopped:
                            raise
                        except Exception as e:  # one tick lost, never the schedule
                            outcome = Outcome(False, 1, None, f"{type(e).__name__}: {e}")
                        self.fired[ping.name] += 1
                        if not outcome.delivered:
                            log.warning(
                                "ping %s to %s failed: %s", ping.name, ping.sink, outcome.reason
                            )
                        due[ping.name] = next_fire(
                            ping.schedule, max(now, due[ping.name]), ping.timezone
                        )
                wait = min((d - self.now()).total_seconds() for d in due.values())
                self.stop.wait(max(0.01, min(wait, 1.0)))
        except _Stopped:
            pass
        finally:
            deliverer.close()


class Dispatcher:
    """Runs a worker per route and one for the pings until ``stop()``."""

    def __init__(
        self, eventing: Eventing, endpoints: Mapping[str, str], settings: Settings
    ) -> None:
        self.eventing, self.endpoints, self.settings = eventing, dict(endpoints), settings
        self.stop_event = threading.Event()
        self.routes: list[RouteWorker] = []
        self.pings: PingWorker | None = None
        self.skipped: list[str] = []
        self.metrics = DispatcherMetrics()
        self._producer: KafkaProducer | None = None
        self._generations: dict[str, threading.Event] = {}
        """Route name → the stop event of its current set of consumers."""
        self._scale_lock = threading.Lock()
        self.scaler: Scaler | None = None
        self._probes: list[Any] = []

    def plan(self) -> dict[str, Any]:
        """What will be dispatched where (and what has no local endpoint)."""
        return {
            "routes": [
                {
                    "name": r.name,
                    "topics": list(r.topics),
                    "group": r.group,
                    "sink": r.sink,
                    "url": self.endpoints.get(r.sink),
                    "filter": dict(r.filter),
                    "consumers": self.consumers(r.name),
                }
                for r in self.eventing.routes
            ],
            "pings": [
                {
                    "name": p.name,
                    "schedule": p.schedule,
                    "sink": p.sink,
                    "url": self.endpoints.get(p.sink),
                }
                for p in self.eventing.pings
            ],
        }

    def start(self) -> None:
        from driftloop import bus

        self._producer = bus.make_producer(self.settings)
        routes = []
        for r in self.eventing.routes:
            if r.sink not in self.endpoints:
                self.skipped.append(r.name)
                log.warning(
                    "route %s: no local endpoint for %s; its records wait in Kafka", r.name, r.sink
                )
                continue
            routes.append(r)
        owners = invalid_record_owners(routes)
        routes = [replace(r, dead_letters_invalid=r.name in owners) for r in routes]
        for r in routes:
            self._run_consumers(r, 1)
        scaled = [r for r in routes if r.scaling.enabled]
        if scaled:
            self.scaler = Scaler(
                [(r.name, r.scaling, self._lag_probe(r), self._rescaler(r)) for r in scaled],
                self.stop_event,
                self.consumers,
            )
            self.scaler.start()
        pings = [
            (p, self.endpoints[p.sink]) for p in self.eventing.pings if p.sink in self.endpoints
        ]
        self.skipped += [p.name for p in self.eventing.pings if p.sink not in self.endpoints]
        if pings:
            self.pings = PingWorker(pings, self.stop_event, self.settings)
            self.pings.start()

    def consumers(self, route: str) -> int:
        return sum(1 for w in self.routes if w.route.name == route and not w.stop.is_set())

    def _run_consumers(self, r: Route, count: int) -> None:
        """Replace the route's consumers by ``count`` new ones, each with its share of the
        partitions. The old ones stop first (a record in flight is not committed and is
        delivered again by its new owner: at least once, order per partition kept)."""
        with self._scale_lock:
            if self.stop_event.is_set():
                return
            old_stop = self._generations.get(r.name)
            old = [w for w in self.routes if w.route.name == r.name]
            if old_stop is not None:
                old_stop.set()
                for w in old:
                    w.join(30)
            stop = threading.Event()
            self._generations[r.name] = stop
            fresh = [
                RouteWorker(
                    r,
                    self.endpoints[r.sink],
                    self.settings,
                    self._producer,  # type: ignore[arg-type]
                    self.eventing.dead_letter_topics,
                    stop,
                    self.metrics,
                    share=(i, count),
                )
                for i in range(count)
            ]
            for w in fresh:
                w.start()
            self.routes = [w for w in self.routes if w.route.name != r.name] + fresh

    def _rescaler(self, r: Route) -> Callable[[int], None]:
        return lambda count: self._run_consumers(r, count)

    def _lag_probe(self, r: Route) -> Callable[[], tuple[int, int]]:
        """(records the route's group is behind, partitions of its topics)."""
        from kafka.structs import TopicPartition

        from driftloop import bus

        probe: list[Any] = []

        def measure() -> tuple[int, int]:
            if not probe:
                probe.append(bus.make_consumer(self.settings, [], r.group))
                self._probes.append(probe[0])
            consumer = probe[0]
            tps = [
                TopicPartition(t, p)
                for t in r.topics
                for p in sorted(consumer.partitions_for_topic(t) or ())
            ]
            return (measure_lag(consumer, tps, r.initial_offset) if tps else 0), len(tps)

        return measure

    def stop(self, timeout_s: float = 15.0) -> None:
        self.stop_event.set()
        with self._scale_lock:
            for ev in self._generations.values():
                ev.set()
        if self.scaler is not None:
            self.scaler.join(timeout_s)
        for probe in self._probes:
            probe.close(autocommit=False)
        for w in [*self.routes, *([self.pings] if self.pings else [])]:
            w.join(timeout_s)
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None

    def failed(self) -> list[str]:
        """Routes that fail right now (retrying) or whose worker ended: the dispatcher is
        unhealthy while this is not empty, and says why."""
        return [
            f"{w.route.name}: {w.last_error or w.error or 'worker ended'}"
            for w in self.routes
            if w.failing or (not w.is_alive() and not w.stop.is_set())
        ]

    def states(self) -> list[dict[str, Any]]:
        """One entry per route, summed over its consumers."""
        out: dict[str, dict[str, Any]] = {}
        for w in list(self.routes):
            st = w.state()
            agg = out.setdefault(st["name"], {**st, "consumers": 0})
            if agg is not st and agg["consumers"]:
                for k in ("delivered", "dead_lettered", "dead_letters_truncated", "errors"):
                    agg[k] += st[k]
                agg["failing"] = agg["failing"] or st["failing"]
                agg["last_error"] = agg["last_error"] or st["last_error"]
            agg["consumers"] += 1
        return list(out.values())


def heartbeat_path(state_dir: Path) -> Path:
    return state_dir / "dispatcher.json"


def _main(argv: list[str] | None = None) -> int:
    from driftloop.settings import Settings

    parser = argparse.ArgumentParser(prog="python -m driftloop.local.dispatcher")
    parser.add_argument("--eventing", type=Path, default=None, help="eventing manifests folder")
    parser.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="sink name → URL (overrides stack.json)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings()
    endpoints = endpoints_from_stack(settings.state_dir)
    for item in args.endpoint:
        name, _, url = item.partition("=")
        endpoints[name] = endpoint_url(url)
    eventing = load_eventing(args.eventing or settings.eventing_dir)
    dispatcher = Dispatcher(eventing, endpoints, settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if settings.dispatcher_metrics_port:
        from prometheus_client import start_http_server

        try:
            start_http_server(
                settings.dispatcher_metrics_port,
                addr="127.0.0.1",
                registry=dispatcher.metrics.registry,
            )
        except OSError as e:  # deliveries matter more than the metrics; the log says why
            log.error("metrics port %d: %s", settings.dispatcher_metrics_port, e)
    dispatcher.start()
    beat = heartbeat_path(settings.state_dir)
    beat.parent.mkdir(parents=True, exist_ok=True)
    reported: list[str] = []
    try:
        while not stop.is_set():
            failed = dispatcher.failed()
            plan = dispatcher.plan() | {
                "skipped": dispatcher.skipped,
                "failed": failed,
                "route_states": dispatcher.states(),
                "updated": time.time(),
            }
            tmp = beat.with_suffix(".tmp")
            tmp.write_text(json.dumps(plan))
            tmp.replace(beat)
            if failed and failed != reported:  # routes retry on their own; the beat says so
                log.error("routes failing: %s", failed)
            reported = failed
            stop.wait(1.0)
    finally:
        dispatcher.stop()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
