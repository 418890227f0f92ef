"""One event to one sink over HTTP: Kafka record → request, retries, reply → Kafka record.

Translation goes through ``driftloop.events`` (the Kafka and HTTP protocol bindings); a
binary-mode record is delivered in binary mode, a structured one in structured mode, as
Knative's Kafka source does. ``Deliverer`` keeps one keep-alive connection per sink and
retries with the delivery spec's backoff; which statuses are retried follows Knative.
"""

from __future__ import annotations

import http.client
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from driftloop import events as ev
from driftloop.errors import DriftloopError
from driftloop.local.eventing.manifests import Delivery, EventingError

if TYPE_CHECKING:
    from driftloop.settings import Settings

__all__ = [
    "RETRYABLE_STATUS",
    "Deliverer",
    "Outcome",
    "Stopped",
    "attributes",
    "delivery_token",
    "matches",
    "record_to_http",
    "reply_to_kafka",
    "retryable",
]

log = logging.getLogger("driftloop.dispatcher")

RETRYABLE_STATUS = frozenset({404, 408, 409, 429})
"""Besides 5xx and connection errors, the statuses Knative's Kafka dispatcher retries."""


class Stopped(Exception):
    """The dispatcher is stopping: a delivery waiting to retry gives up (not committed)."""


def attributes(event: ev.Event) -> dict[str, str]:
    """The attributes a Trigger filter sees, as strings (extensions included)."""
    attrs = {
        "specversion": ev.SPECVERSION,
        "id": event.id,
        "source": event.source,
        "type": event.type,
    }
    if event.time is not None:
        attrs["time"] = ev.format_time(event.time)
    if event.datacontenttype:
        attrs["datacontenttype"] = event.datacontenttype
    if event.subject:
        attrs["subject"] = event.subject
    attrs.update(event.extensions)
    return attrs


def _is_structured(headers: Sequence[tuple[str, bytes | None]]) -> bool:
    return not any(k.lower() == "ce_specversion" for k, _ in headers)


def record_to_http(
    value: bytes | None, headers: Sequence[tuple[str, bytes | None]], key: bytes | None = None
) -> tuple[dict[str, str], bytes, dict[str, str]]:
    """Kafka record → (HTTP headers, body, CloudEvent attributes).

    Binary-mode records become binary-mode requests, structured ones structured requests.
    Raises ``EventingError`` naming the rule for a record that is not a valid CloudEvent.
    """
    try:
        event = ev.from_kafka(value, headers, key)
    except DriftloopError as e:
        raise EventingError(str(e)) from e
    if _is_structured(headers):
        http, body = ev.to_http_structured(event)
    else:
        http, body = ev.to_http_binary(event)
    return http, body, attributes(event)


def matches(filter_attrs: Mapping[str, str], attrs: Mapping[str, str]) -> bool:
    """Knative Trigger ``filter.attributes``: exact match on every attribute ('' matches any)."""
    return all(v == "" or attrs.get(k) == v for k, v in filter_attrs.items())


def retryable(status: int | None) -> bool:
    """None is a connection error or timeout."""
    return status is None or status >= 500 or status in RETRYABLE_STATUS


def reply_to_kafka(headers: Mapping[str, str], body: bytes) -> ev.KafkaRecord | None:
    """A subscriber's binary-mode reply event as a Kafka record; None when the response
    carries no event. Raises ``EventingError`` for a reply that is not a valid CloudEvent."""
    h = {k.lower(): v for k, v in headers.items()}
    if not (h.get("ce-id") and h.get("ce-type") and h.get("ce-source")):
        return None
    try:
        (event,) = ev.from_http(h, body)
    except DriftloopError as e:
        raise EventingError(f"reply: {e}") from e
    return ev.to_kafka(event)


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


class _Transport(Exception):
    """The request did not get an HTTP answer (connection refused, reset, timed out)."""


class Deliverer:
    """POSTs events to sinks with the delivery spec's retries and backoff, over one
    keep-alive HTTP/1.1 connection per sink (not shared between threads: one per lane).

    The stdlib client costs a quarter of httpx's CPU per request here (bench/dispatcher.py),
    which bounds a route's events/s. Redirects are not followed; header values must be ASCII.
    """

    def __init__(
        self, stop: threading.Event, default_timeout_s: float, token: str | None = None
    ) -> None:
        """``token``: the bearer token every delivery carries (the control-plane functions
        refuse deliveries without one when DRIFTLOOP_FUNCTION_TOKENS is set)."""
        self._auth = {"authorization": f"Bearer {token}"} if token else {}
        self._stop = stop
        self._timeout = default_timeout_s
        self._conns: dict[str, tuple[http.client.HTTPConnection, str, bool]] = {}
        """URL → (its keep-alive connection, request path, whether it served a request)."""

    def close(self) -> None:
        for conn, _, _ in self._conns.values():
            conn.close()
        self._conns.clear()

    def _connection(self, url: str, timeout: float) -> tuple[http.client.HTTPConnection, str, bool]:
        known = self._conns.get(url)
        if known is None:
            parts = urlsplit(url)
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                raise _Transport(f"not an http(s) URL: {url!r}")
            https = parts.scheme == "https"
            cls = http.client.HTTPSConnection if https else http.client.HTTPConnection
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            known = (cls(parts.hostname, parts.port, timeout=timeout), path, False)
            self._conns[url] = known
        conn = known[0]
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return known

    def _post(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> tuple[int, dict[str, str], bytes]:
        """One POST; a kept-alive connection the server has closed meanwhile is replaced
        once at no cost of an attempt (the request may arrive twice: at least once)."""
        sent = {**self._auth, **headers}
        for name, value in sent.items():  # what HTTP cannot carry is the record's fault
            name.encode("ascii")
            value.encode("ascii")
        for fresh in (False, True):
            conn, path, used = self._connection(url, timeout)
            try:
                conn.request("POST", path, body=body, headers=sent)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                self._conns.pop(url, None)
                if used and not fresh and not isinstance(e, TimeoutError):
                    continue
                raise _Transport(f"{type(e).__name__}: {e}") from e
            if resp.will_close:
                conn.close()
                self._conns.pop(url, None)
            else:
                self._conns[url] = (conn, path, True)
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        raise AssertionError("unreachable")  # pragma: no cover

    def deliver(self, url: str, headers: Mapping[str, str], body: bytes, d: Delivery) -> Outcome:
        """Until a 2xx, a status not worth retrying, or the last retry; raises ``Stopped``
        when the dispatcher stops while waiting to retry."""
        delays = d.delays()
        attempt = 0
        while True:
            attempt += 1
            status: int | None = None
            try:
                status, got, content = self._post(url, headers, body, d.timeout_s or self._timeout)
                if 200 <= status < 300:
                    return Outcome(True, attempt, status, reply=(got, content))
                reason = f"HTTP {status}: {content[:300].decode('utf-8', errors='replace')}"
            except _Transport as e:
                reason = str(e)
            if not retryable(status) or attempt > len(delays):
                return Outcome(False, attempt, status, reason)
            log.info(
                "retrying %s in %.2fs (attempt %d): %s", url, delays[attempt - 1], attempt, reason
            )
            if self._stop.wait(delays[attempt - 1]):
                raise Stopped
