"""Two retrain-trigger processes (functions-framework, as deployed) sharing one blob store:
the same burst of drift events delivered to both starts one run, on file:// and on the
real S3 server (versitygw); labels are counted once across both and survive restarts."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from driftloop import events as ev
from driftloop.blob import open_store
from driftloop.local.process import free_port, http_ok, spawn, stop_pid, wait_until
from driftloop.retrain.state import RunStore
from driftloop.settings import PROJECT_ROOT, Settings
from tests.fixtures.loop import drift_event, wait_run, write_policy


@dataclass
class Replica:
    url: str
    pid: int
    log: Path

    def post(self, event: ev.Event) -> tuple[int, dict[str, Any]]:
        headers, body = ev.to_http_binary(event)
        r = httpx.post(self.url, headers=headers, content=body, timeout=60)
        return r.status_code, r.json()


@pytest.fixture(params=["file", "s3"])
def replicas(request, settings_factory: Callable[..., Settings], s3: Any,
             tmp_path: Path) -> Iterator[tuple[Settings, list[Replica]]]:
    blob_url = ((tmp_path / "blobs").as_uri() if request.param == "file"
                else f"s3://{s3.new_bucket()}/driftloop")
    settings = settings_factory(
        blob_url=blob_url, policy_dir=write_policy(tmp_path / "policies",
                                                   triggers={"feedback_volume":
                                                             {"min_events": 5}}),
        prometheus_url="http://127.0.0.1:9", serving_url="http://127.0.0.1:9")
    env = {**settings.to_env(), "PYTHONUNBUFFERED": "1"}
    started: list[Replica] = []
    try:
        for i in range(2):
            port = free_port()
            log = tmp_path / f"replica-{i}.log"
            proc = spawn([str(Path(sys.executable).parent / "functions-framework"),
                          "--target", "retrain_trigger",
                          "--source", str(PROJECT_ROOT / "functions/retrain-trigger/main.py"),
                          "--host", "127.0.0.1", "--port", str(port)],
                         log_path=log, env=env, cwd=PROJECT_ROOT)
            started.append(Replica(f"http://127.0.0.1:{port}/", proc.pid, log))
            wait_until(lambda p=port: http_ok(f"http://127.0.0.1:{p}/healthz"), timeout_s=60,
                       what=f"retrain-trigger replica {i}", alive=lambda p=proc: p.poll() is None,
                       log_path=log)
        yield settings, started
    finally:
        for r in started:
            stop_pid(r.pid)


def test_the_same_fifty_drift_events_at_two_replicas_start_one_run(replicas) -> None:
    settings, (a, b) = replicas
    runs = RunStore(open_store(settings.resolved_blob_url, settings))
    events = [drift_event(source="drift-check") for _ in range(50)]
    barrier = threading.Barrier(2)

    def first(replica: Replica) -> tuple[int, dict[str, Any]]:
        barrier.wait()  # both replicas decide on the first event at the same moment
        return replica.post(events[0])

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(first, (a, b)))
        results += list(pool.map(lambda x: x[0].post(x[1]),
                                 [(r, e) for e in events[1:] for r in (a, b)]))
    started = [body["run_id"] for status, body in results if status == 202]
    assert len(started) == 1, [(s, b.get("decision", {}).get("blocked_by")) for s, b in results]
    others = [body for status, body in results if status != 202]
    assert all(r["run_id"] is None for r in others)
    assert {r["decision"]["blocked_by"] for r in others} <= {"cooldown", "concurrency",
                                                              "duplicate"}
    assert [s.run_id for s in runs.starts("digits")] == started
    run = wait_run(runs, "digits", started[0], timeout_s=180)
    assert run.status == "succeeded", run.error
    assert [r.run_id for r in runs.runs("digits")] == started


def labeled(i: int, *, source: str = "app", truth: object = 3, matched: bool = True,
            ) -> ev.Event:
    data: dict[str, Any] = {"model": "digits", "feedback_id": f"fb-{i}",
                            "feedback_source": source, "truth": truth, "reward": None}
    if matched:
        data["prediction_id"] = f"p-{i}"
    return ev.new_event(ev.LABELED, "driftloop/flink/join", data, datacontenttype=ev.JSON,
                        model="digits")


def test_labels_count_once_per_source_and_id_across_replicas(replicas) -> None:
    settings, (a, b) = replicas
    runs = RunStore(open_store(settings.resolved_blob_url, settings))
    # Both replicas receive each delivery (a redelivery after a rebalance, say).
    for i in range(3):
        for r in (a, b):
            status, body = r.post(labeled(i))
            assert status == 200, body
    assert runs.label_count("digits", 0) == 3
    # Not usable: reward-only, unmatched; raw feedback is not counted at all.
    assert a.post(labeled(10, truth=None))[1]["counted"] is False
    assert a.post(labeled(11, matched=False))[1]["counted"] is False
    raw = ev.new_event(ev.FEEDBACK, "app", {"prediction_id": "p-1", "model": "digits",
                                            "truth": 3}, datacontenttype=ev.JSON)
    assert b.post(raw)[1]["counted"] is False
    # The same id from another app is another label.
    status, body = b.post(labeled(0, source="other-app"))
    assert body["counted"] is True and body["feedback_since_training"] == 4
    # The fifth usable label reaches the threshold: one run, and the count restarts.
    status, body = a.post(labeled(5))
    assert status == 202, body
    fired = [r for r in body["decision"]["rules"] if r["fired"]]
    assert [(r["rule"], r["value"]) for r in fired] == [("feedback_volume", 5)]
    assert wait_run(runs, "digits", body["run_id"], timeout_s=180).status == "succeeded"
    status, body = b.post(labeled(6))
    assert body["counted"] is True and body["feedback_since_training"] == 1
    assert json.loads(json.dumps(body))["threshold"] == 5
