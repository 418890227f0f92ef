"""driftloop's client for apps: predictions over V2 REST, feedback to feedback-intake
(single or batched, idempotent (source, id) kept across retries, ``Retry-After`` honoured
up to a deadline, bearer token), raw inputs to Kafka. Errors are ``driftloop.errors``
exceptions carrying the server's status and field errors (``ValidationFailed.fields``).

gRPC: the V2 gRPC stubs ship with MLServer (``mlserver.grpc``), which is not an app
dependency; this client speaks REST only."""

from driftloop.client.aio import AsyncClient
from driftloop.client.retry import RetryPolicy
from driftloop.client.sync import Client
from driftloop.client.types import Accepted, BatchResult, Feedback, ItemResult
from driftloop.errors import DriftloopError, Unavailable, ValidationFailed
from driftloop.serving.v2 import Prediction

__all__ = ["Accepted", "AsyncClient", "BatchResult", "Client", "DriftloopError", "Feedback",
           "ItemResult", "Prediction", "RetryPolicy", "Unavailable", "ValidationFailed"]
