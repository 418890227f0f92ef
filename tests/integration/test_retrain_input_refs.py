"""Input references are driftloop's alone: a client header naming a blob never reaches a
prediction event (and so never the labeled data a training run reads); the event names the
server's own kept copy of the input, if any."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from driftloop import events, topics
from driftloop.serving import v2
from driftloop.serving.models import digits

pytestmark = pytest.mark.integration


def test_a_client_header_never_becomes_an_input_reference(mlserver, kafka) -> None:
    pid = f"poison-{uuid.uuid4()}"
    body = v2.tensor_request(digits.load_dataset().X[:1].tolist())
    with httpx.Client(base_url=mlserver.url, timeout=60) as h:
        r = h.post("/v2/models/digits/infer", json=body, headers={
            "x-request-id": pid, "x-driftloop-input-ref": "models/digits/1/manifest.json"})
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 60
    found: list[events.Event] = []
    while time.monotonic() < deadline and not found:
        found = [e for e in kafka.read_events(topics.PREDICTIONS) if e.id == pid]
        time.sleep(0.5)
    assert len(found) == 1
    # the reference is the server's own key for the kept input, never the header's
    ref = events.PredictionData.parse(found[0].data).input_ref
    assert ref != "models/digits/1/manifest.json"
    assert ref is None or ref.startswith("inputs/model=digits/date=")
