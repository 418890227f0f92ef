"""The blocking client: predict, feedback (single, batched), send_input."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import httpx

from driftloop.client import wire
from driftloop.client.errors import error_from_response, retry_after_s
from driftloop.client.inputs import InputSender
from driftloop.client.retry import RETRY_STATUSES, Attempts, RetryPolicy
from driftloop.client.types import Accepted, BatchResult, Feedback, ItemResult
from driftloop.errors import BadRequest, DriftloopError, Unavailable
from driftloop.serving.v2 import Prediction

if TYPE_CHECKING:
    from driftloop.client.grpc_transport import GrpcTransport
    from driftloop.settings import Settings


class Client:
    """One app's client. ``source`` names the app in every feedback event's identity
    (source, id); reuse the client (it keeps connection pools)."""

    def __init__(self, *, source: str, intake_url: str | None = None,
                 serving_url: str | None = None, token: str | None = None,
                 retry: RetryPolicy | None = None, timeout_s: float = 30.0,
                 kafka: Settings | None = None, max_batch_events: int = 1000,
                 on_response: list[Callable[[httpx.Response], None]] | None = None,
                 serving_grpc: str | None = None) -> None:
        """``on_response``: httpx hooks called with every answer, retries included
        (logging, metrics). ``max_batch_events``: larger batches go as several requests
        (intake refuses a batch over ``DRIFTLOOP_INTAKE_MAX_BATCH_EVENTS`` with 413).
        ``serving_grpc``: the model server's V2 gRPC ``host:port``; predict then goes over
        gRPC (``pip install driftloop[grpc]``)."""
        self.source, self.intake_url, self.serving_url = source, intake_url, serving_url
        self.serving_grpc, self.timeout_s = serving_grpc, timeout_s
        self._grpc_client: GrpcTransport | None = None
        self.max_batch_events = max(1, max_batch_events)
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(timeout=timeout_s, headers=wire.auth_headers(token),
                                       event_hooks={"response": list(on_response or [])})
        self._inputs = InputSender(source, kafka)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        self._inputs.close()
        if self._grpc_client is not None:
            self._grpc_client.close()

    # ------------------------------------------------------------------ HTTP with retries

    def _post(self, url: str | None, headers: dict[str, str], content: bytes,
              what: str, attempts: Attempts) -> httpx.Response:
        if not url:
            raise BadRequest(f"{what}: this client has no URL for it")
        while True:
            err: DriftloopError
            try:
                r = self._http.post(url, headers=headers, content=content)
                if r.status_code not in RETRY_STATUSES:
                    return r
                retry_after = retry_after_s(r.headers)
                err = error_from_response(r.status_code, r.content, what)
            except httpx.TransportError as e:
                retry_after, err = None, Unavailable(f"{what}: {url} unreachable: {e}")
            wait = attempts.next_wait(time.monotonic(), retry_after)
            if wait is None:
                raise err
            time.sleep(wait)

    # ------------------------------------------------------------------ predict

    def predict(self, model: str, input: Any, *, version: str | None = None,
                request_id: str | None = None) -> Prediction:
        """Infer over V2 REST (media bytes as the body itself), or gRPC (media bytes as
        ``raw_input_contents``) when the client has ``serving_grpc``; retries reuse the
        request id, so a retried prediction keeps its id (feedback refers to it)."""
        rid = wire.new_request_id(request_id)
        attempts = Attempts(self.retry, time.monotonic())
        if self.serving_grpc:
            while True:
                try:
                    return self._grpc().predict(model, input, version=version, request_id=rid)
                except Unavailable:
                    wait = attempts.next_wait(time.monotonic(), None)
                    if wait is None:
                        raise
                    time.sleep(wait)
        headers, body = wire.infer_content(input, rid)
        url = f"{(self.serving_url or '').rstrip('/')}{wire.infer_path(model, version)}" \
            if self.serving_url else None
        r = self._post(url, headers, body, f"{model} inference", attempts)
        return wire.prediction(model, rid, r.status_code, r.headers, r.content)

    def _grpc(self) -> GrpcTransport:
        from driftloop.client.grpc_transport import GrpcTransport

        if self._grpc_client is None:
            self._grpc_client = GrpcTransport(str(self.serving_grpc), self.timeout_s)
        return self._grpc_client

    # ------------------------------------------------------------------ feedback

    def make_feedback(self, prediction: Prediction | str, *, truth: Any = None,
                      reward: Any = None, model: str | None = None,
                      version: str | None = None, id: str | None = None) -> Feedback:
        return wire.make_feedback(self.source, prediction, truth=truth, reward=reward,
                                  model=model, version=version, id=id)

    def feedback(self, prediction: Prediction | str, *, truth: Any = None, reward: Any = None,
                 model: str | None = None, version: str | None = None,
                 id: str | None = None) -> Accepted:
        """Send one feedback event; 202 once Kafka holds it. Field errors raise
        ``ValidationFailed`` (``.fields``); 503s are retried until the deadline."""
        return self.send_feedback(self.make_feedback(prediction, truth=truth, reward=reward,
                                                     model=model, version=version, id=id))

    def send_feedback(self, fb: Feedback) -> Accepted:
        headers, body = wire.single_request(fb)
        r = self._post(self.intake_url, headers, body, "feedback",
                       Attempts(self.retry, time.monotonic()))
        return wire.accepted(fb, r.status_code, r.content)

    def feedback_batch(self, items: Iterable[Feedback]) -> BatchResult:
        """Send many in one request; events refused with 503 are resent (same ids) until
        the deadline, the others' results are final. Refused events are in ``.rejected``."""
        events = list(items)
        attempts = Attempts(self.retry, time.monotonic())
        done: dict[int, ItemResult] = {}
        pending = list(range(len(events)))
        while True:
            sent = pending[: self.max_batch_events]
            headers, body = wire.batch_request([events[i] for i in sent])
            r = self._post(self.intake_url, headers, body, "feedback batch", attempts)
            results = wire.batch_items([events[i] for i in sent], r.status_code, r.content)
            for i, res in zip(sent, results, strict=True):
                done[i] = res
            pending = [i for i in pending if i not in done or done[i].status in RETRY_STATUSES]
            if not pending:
                return wire.merge(self.source, events, done)
            if all(done[i].status not in RETRY_STATUSES for i in sent):
                continue  # this part is final: send the next one at once
            wait = attempts.next_wait(time.monotonic(), retry_after_s(r.headers))
            if wait is None:
                return wire.merge(self.source, events, done)
            time.sleep(wait)

    # ------------------------------------------------------------------ raw inputs

    def send_input(self, model: str, data: bytes, *, content_type: str,
                   id: str | None = None) -> str:
        """Publish a raw input (audio/image bytes) to its raw topic; returns its id once
        Kafka acknowledged it. Preprocess and streaming inference pick it up from there."""
        return self._inputs.send(model, data, content_type=content_type, id=id)


__all__ = ["Client"]
