"""The asyncio client: the same calls as ``Client``, awaited (httpx.AsyncClient)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
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

ResponseHook = Callable[[httpx.Response], Awaitable[None]]


class AsyncClient:
    """Like ``Client``; ``send_input`` runs the Kafka producer in a worker thread."""

    def __init__(self, *, source: str, intake_url: str | None = None,
                 serving_url: str | None = None, token: str | None = None,
                 retry: RetryPolicy | None = None, timeout_s: float = 30.0,
                 kafka: Settings | None = None, max_batch_events: int = 1000,
                 on_response: list[ResponseHook] | None = None,
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
        self._http = httpx.AsyncClient(timeout=timeout_s, headers=wire.auth_headers(token),
                                       event_hooks={"response": list(on_response or [])})
        self._inputs = InputSender(source, kafka)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()
        await asyncio.to_thread(self._inputs.close)
        if self._grpc_client is not None:
            self._grpc_client.close()

    async def _post(self, url: str | None, headers: dict[str, str], content: bytes,
                    what: str, attempts: Attempts) -> httpx.Response:
        if not url:
            raise BadRequest(f"{what}: this client has no URL for it")
        while True:
            err: DriftloopError
            try:
                r = await self._http.post(url, headers=headers, content=content)
                if r.status_code not in RETRY_STATUSES:
                    return r
                retry_after = retry_after_s(r.headers)
                err = error_from_response(r.status_code, r.content, what)
            except httpx.TransportError as e:
                retry_after, err = None, Unavailable(f"{what}: {url} unreachable: {e}")
            wait = attempts.next_wait(time.monotonic(), retry_after)
            if wait is None:
                raise err
            await asyncio.sleep(wait)

    async def predict(self, model: str, input: Any, *, version: str | None = None,
                      request_id: str | None = None) -> Prediction:
        """Over gRPC when the client has ``serving_grpc``, else V2 REST; media bytes go
        raw either way. Retries reuse the request id."""
        rid = wire.new_request_id(request_id)
        attempts = Attempts(self.retry, time.monotonic())
        if self.serving_grpc:
            while True:
                try:
                    return await asyncio.to_thread(self._grpc().predict, model, input,
                                                   version=version, request_id=rid)
                except Unavailable:
                    wait = attempts.next_wait(time.monotonic(), None)
                    if wait is None:
                        raise
                    await asyncio.sleep(wait)
        headers, body = wire.infer_content(input, rid)
        url = f"{(self.serving_url or '').rstrip('/')}{wire.infer_path(model, version)}" \
            if self.serving_url else None
        r = await self._post(url, headers, body, f"{model} inference", attempts)
        return wire.prediction(model, rid, r.status_code, r.headers, r.content)

    def _grpc(self) -> GrpcTransport:
        from driftloop.client.grpc_transport import GrpcTransport

        if self._grpc_client is None:
            self._grpc_client = GrpcTransport(str(self.serving_grpc), self.timeout_s)
        return self._grpc_client

    def make_feedback(self, prediction: Prediction | str, *, truth: Any = None,
                      reward: Any = None, model: str | None = None,
                      version: str | None = None, id: str | None = None) -> Feedback:
        return wire.make_feedback(self.source, prediction, truth=truth, reward=reward,
                                  model=model, version=version, id=id)

    async def feedback(self, prediction: Prediction | str, *, truth: Any = None,
                       reward: Any = None, model: str | None = None,
                       version: str | None = None, id: str | None = None) -> Accepted:
        return await self.send_feedback(self.make_feedback(
            prediction, truth=truth, reward=reward, model=model, version=version, id=id))

    async def send_feedback(self, fb: Feedback) -> Accepted:
        headers, body = wire.single_request(fb)
        r = await self._post(self.intake_url, headers, body, "feedback",
                             Attempts(self.retry, time.monotonic()))
        return wire.accepted(fb, r.status_code, r.content)

    async def feedback_batch(self, items: Iterable[Feedback]) -> BatchResult:
        events = list(items)
        attempts = Attempts(self.retry, time.monotonic())
        done: dict[int, ItemResult] = {}
        pending = list(range(len(events)))
        while True:
            sent = pending[: self.max_batch_events]
            headers, body = wire.batch_request([events[i] for i in sent])
            r = await self._post(self.intake_url, headers, body, "feedback batch", attempts)
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
            await asyncio.sleep(wait)

    async def send_input(self, model: str, data: bytes, *, content_type: str,
                         id: str | None = None) -> str:
        return await asyncio.to_thread(self._inputs.send, model, data,
                                       content_type=content_type, id=id)


__all__ = ["AsyncClient"]
