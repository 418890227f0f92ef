"""A librdkafka producer (confluent-kafka) behind the producer interface driftloop uses.

``driftloop.bus.make_producer`` builds either client (``Settings.kafka_producer_client``);
callers see one interface: ``send(topic, key=, value=, headers=)`` returns a future whose
``get(timeout)`` gives the record's metadata once Kafka acknowledged it, ``flush`` and
``close`` as kafka-python's; failures are raised as ``kafka.errors`` exceptions
(``MessageSizeTooLargeError``, ``KafkaTimeoutError``, ``KafkaError``), so code written
against one client handles the other alike.

Why: kafka-python encodes, batches and sends in Python, on a thread that competes for
the GIL with the requests it serves; librdkafka does that in C threads. Measured in
``bench/intake.py`` (docs in the README's bench section).

Acknowledgements arrive through delivery callbacks, served by one poller thread per
producer (started when the producer is built, never at import). ``kafka.errors`` is
imported only when an error is raised: importing the ``kafka`` package loads all of
kafka-python (about a quarter of feedback-intake's imports before its first event).
"""

from __future__ import annotations

import functools
import importlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from kafka.errors import KafkaError

__all__ = ["RdKafkaProducer", "RecordFuture", "RecordMetadata", "rdkafka_config"]

log = logging.getLogger("driftloop.rdkafka")
POLL_INTERVAL_S = 0.2
"""How long the poller blocks in librdkafka at most (it wakes on every acknowledgement)."""


def _errors() -> ModuleType:
    """``kafka.errors``, imported on the first error."""
    return importlib.import_module("kafka.errors")


class RecordMetadata(NamedTuple):
    """Where an acknowledged record was written."""

    topic: str
    partition: int
    offset: int


class RecordFuture:
    """One record's outcome: resolved by the producer's delivery callback."""

    __slots__ = ("_callbacks", "_done", "_errbacks", "_error", "_lock", "_value")

    def __init__(self) -> None:
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._value: RecordMetadata | None = None
        self._error: Exception | None = None
        self._callbacks: list[Callable[[RecordMetadata], Any]] = []
        self._errbacks: list[Callable[[Exception], Any]] = []

    @property
    def is_done(self) -> bool:
        return self._done.is_set()

    @property
    def exception(self) -> Exception | None:
        return self._error

    def succeeded(self) -> bool:
        return self._done.is_set() and self._error is None

    def failed(self) -> bool:
        return self._done.is_set() and self._error is not None

    def get(self, timeout: float | None = None) -> RecordMetadata:
        """The metadata once Kafka acknowledged the record (acks=all); raises the
        delivery error, or ``KafkaTimeoutError`` when ``timeout`` passes first."""
        if not self._done.wait(timeout):
            raise _errors().KafkaTimeoutError(f"no acknowledgement within {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value

    def add_callback(self, fn: Callable[[RecordMetadata], Any]) -> RecordFuture:
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(fn)
                return self
        if self._error is None and self._value is not None:
            _call(functools.partial(fn, self._value))
        return self

    def add_errback(self, fn: Callable[[Exception], Any]) -> RecordFuture:
        with self._lock:
            if not self._done.is_set():
                self._errbacks.append(fn)
                return self
        if self._error is not None:
            _call(functools.partial(fn, self._error))
        return self

    def resolve(self, value: RecordMetadata | None, error: Exception | None) -> None:
        with self._lock:
            if self._done.is_set():
                return
            self._value, self._error = value, error
            self._done.set()
            callbacks, errbacks = self._callbacks, self._errbacks
            self._callbacks, self._errbacks = [], []
        calls: list[Callable[[], Any]] = []
        if error is not None:
            calls = [functools.partial(eb, error) for eb in errbacks]
        elif value is not None:
            calls = [functools.partial(cb, value) for cb in callbacks]
        for call in calls:
            _call(call)


def _call(call: Callable[[], Any]) -> None:
    """Run a caller's callback; its failure is logged, never raised into the delivery
    loop (as kafka-python's futures do)."""
    try:
        call()
    except Exception:
        log.exception("a delivery callback failed")


def _error(err: Any) -> KafkaError:
    """A librdkafka error as the ``kafka.errors`` exception callers catch."""
    from confluent_kafka import KafkaError as RdError

    code = err.code() if hasattr(err, "code") else None
    text = err.str() if hasattr(err, "str") else str(err)
    errors = _errors()
    if code == RdError.MSG_SIZE_TOO_LARGE:
        return errors.MessageSizeTooLargeError(text)
    if code in (RdError._MSG_TIMED_OUT, RdError._TIMED_OUT, RdError.REQUEST_TIMED_OUT):
        return errors.KafkaTimeoutError(text)
    return errors.KafkaError(text)


# kafka-python option -> librdkafka property (value passed through unless converted below).
_NAMES = {
    "client_id": "client.id",
    "security_protocol": "security.protocol",
    "ssl_cafile": "ssl.ca.location",
    "sasl_mechanism": "sasl.mechanism",
    "sasl_plain_username": "sasl.username",
    "sasl_plain_password": "sasl.password",
    "acks": "acks",
    "retries": "retries",
    "enable_idempotence": "enable.idempotence",
    "max_in_flight_requests_per_connection": "max.in.flight.requests.per.connection",
    "linger_ms": "linger.ms",
    "request_timeout_ms": "request.timeout.ms",
    "delivery_timeout_ms": "delivery.timeout.ms",
    "reconnect_backoff_max_ms": "reconnect.backoff.max.ms",
    "max_request_size": "message.max.bytes",
}
_ADAPTER = ("max_block_ms", "bootstrap_timeout_ms")
"""Options the adapter itself honours (how long ``send`` and the start may wait)."""


def rdkafka_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """librdkafka properties from kafka-python producer options, and the adapter's own
    (``max_block_ms``, ``bootstrap_timeout_ms``). An option with no equivalent is a
    ``ValueError`` naming it: a setting is never dropped silently."""
    # Nagle off, as kafka-python's sockets (TCP_NODELAY): a lone small produce request
    # must not wait for the previous segment's ACK (up to the peer's delayed-ACK 40 ms).
    props: dict[str, Any] = {"socket.nagle.disable": True}
    own: dict[str, Any] = {}
    for name, value in config.items():
        if name in _ADAPTER:
            own[name] = value
        elif name == "bootstrap_servers":
            props["bootstrap.servers"] = ",".join(value) if not isinstance(value, str) else value
        elif name == "ssl_check_hostname":
            props["ssl.endpoint.identification.algorithm"] = "https" if value else "none"
        elif name == "compression_type":
            props["compression.type"] = value or "none"
        elif name in _NAMES:
            props[_NAMES[name]] = value
        else:
            raise ValueError(f"producer option {name!r} has no librdkafka equivalent")
    if "message.max.bytes" in props:
        # librdkafka reads the whole fetch/produce framing from this: keep room for it.
        props["message.max.bytes"] = int(props["message.max.bytes"])
    return props, own


class RdKafkaProducer:
    """confluent-kafka's ``Producer`` with kafka-python's producer surface."""

    def __init__(self, config: dict[str, Any]) -> None:
        """Build from kafka-python style options; waits until the cluster answered a
        metadata request (``bootstrap_timeout_ms``), so an unreachable or refusing
        cluster is a ``KafkaError`` here, as with kafka-python, and the connection is warm
        before the first record."""
        from confluent_kafka import KafkaException, Producer

        props, own = rdkafka_config(config)
        self._max_block_s = own.get("max_block_ms", 60_000) / 1000
        bootstrap_s = own.get("bootstrap_timeout_ms", 30_000) / 1000
        errors: list[str] = []
        props["error_cb"] = lambda err: errors.append(str(err))
        props["logger"] = log  # librdkafka's own log lines go through logging, not stderr
        self._producer = Producer(props)
        try:
            self._producer.list_topics(timeout=bootstrap_s)
        except KafkaException as e:
            self._producer.purge()
            detail = "".join(f"; {x}" for x in errors[-3:])
            raise _errors().KafkaError(f"Kafka did not answer: {e}{detail}") from e
        self._closed = threading.Event()
        self._poller = threading.Thread(
            target=self._poll, name="driftloop-rdkafka-poller", daemon=True
        )
        self._poller.start()

    def _poll(self) -> None:
        while not self._closed.is_set():
            try:
                self._producer.poll(POLL_INTERVAL_S)
            except Exception:  # never let one failure end every later acknowledgement
                log.exception("serving delivery reports failed")

    def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordFuture:
        """Queue one record; the future resolves once every in-sync replica has it."""
        from confluent_kafka import KafkaException

        if self._closed.is_set():
            raise _errors().KafkaError("the producer is closed")
        future = RecordFuture()

        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                future.resolve(None, _error(err))
            else:
                future.resolve(RecordMetadata(msg.topic(), msg.partition(), msg.offset()), None)

        kwargs: dict[str, Any] = {"value": value, "key": key, "on_delivery": delivered}
        if headers:
            kwargs["headers"] = list(headers)
        if partition is not None:
            kwargs["partition"] = partition
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        deadline = time.monotonic() + self._max_block_s
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                return future
            except BufferError as e:  # the local queue is full: wait for room, bounded
                if time.monotonic() >= deadline:
                    raise _errors().KafkaTimeoutError(f"no room to queue a record: {e}") from e
                self._producer.poll(0.05)
            except KafkaException as e:
                raise _error(e.args[0]) from e

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued record was acknowledged or failed."""
        left = self._producer.flush(-1 if timeout is None else timeout)
        if left:
            raise _errors().KafkaTimeoutError(f"{left} records not delivered within {timeout} s")

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is queued (up to ``timeout``; 0: drop it now), then stop. Records
        not delivered fail their futures."""
        if self._closed.is_set():
            return
        if timeout is None or timeout > 0:
            self._producer.flush(-1 if timeout is None else timeout)
        self._producer.purge()
        self._producer.flush(0)  # serves the purged records' callbacks
        self._closed.set()
        if threading.current_thread() is not self._poller:
            self._poller.join(POLL_INTERVAL_S * 5)
