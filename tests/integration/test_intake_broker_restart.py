"""Every event that got a 202 survives the broker stopping and restarting mid-stream.

The test runs its own broker and intake server, so the session's broker (which other
long-running components of the test session use) is never interrupted.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from driftloop import topics
from driftloop.local.process import stop_pid
from tests.fixtures.intake import feedback, post_binary, start_intake_server, unique_source

pytestmark = pytest.mark.integration


@pytest.fixture
def own_intake(own_kafka, tmp_path):
    server = start_intake_server(
        {"DRIFTLOOP_KAFKA_BOOTSTRAP": own_kafka.bootstrap, "DRIFTLOOP_INTAKE_SEND_TIMEOUT_S": "3",
         "DRIFTLOOP_INTAKE_RETRY_AFTER_S": "1"},
        tmp_path / "intake.log",
    )
    yield server
    stop_pid(server.proc.pid)


def test_acknowledged_events_survive_broker_restart(own_intake, own_kafka):
    intake_server, kafka = own_intake, own_kafka
    src = unique_source()
    results: dict[str, int] = {}
    stop = threading.Event()

    def send() -> None:
        with httpx.Client(base_url=intake_server.url, timeout=30) as client:
            i = 0
            while not stop.is_set() and i < 2000:
                e = feedback(src, i)
                try:
                    results[e.id] = post_binary(client, "/", e).status_code
                except httpx.HTTPError:
                    results[e.id] = -1
                i += 1

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 60
    while len(results) < 100:
        assert time.monotonic() < deadline, "intake too slow before the restart"
        time.sleep(0.05)
    kafka.stop()
    down_at = len(results)
    time.sleep(4)
    kafka.start()
    up_at = len(results)
    deadline = time.monotonic() + 120
    while len(results) < up_at + 100:
        assert time.monotonic() < deadline, "intake did not recover after the restart"
        time.sleep(0.05)
    stop.set()
    sender.join(timeout=60)

    statuses = list(results.values())
    assert set(statuses) <= {202, 503}, set(statuses)
    assert 503 in statuses, "the broker outage was not observed"
    assert statuses[-50:] == [202] * 50, "intake did not recover"
    acknowledged = {i for i, s in results.items() if s == 202}
    in_kafka = {e.id for e in kafka.read_events(topics.FEEDBACK) if e.source == src}
    assert acknowledged <= in_kafka, f"lost {len(acknowledged - in_kafka)} acknowledged events"
    assert down_at >= 100
