"""The whole loop on real parts: MLServer, Kafka, S3, Prometheus/Pushgateway/Alertmanager,
drift-check, retrain-trigger, a training subprocess and promote.

Rotated digits (injected drift) make quality drop; drift-check pushes the quality and
emits drift.detected; Alertmanager fires DriftloopQualityLow; retrain-trigger starts one
run; promote gates, canaries and bakes the new version and promotes it; quality recovers.
Then a deliberately worse candidate is rolled back during its canary.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from driftloop import events as ev
from driftloop import topics
from driftloop.blob import open_store
from driftloop.demo.traffic import Traffic, digit_samples
from driftloop.monitoring.check import DriftCheckService
from driftloop.policy import load_policy
from driftloop.promotion import routing
from driftloop.promotion.service import PromotionService
from driftloop.registry import Registry
from driftloop.retrain.pipeline import _save_profile, train_model
from driftloop.retrain.state import RunStore
from driftloop.retrain.trainers import trainer_for
from driftloop.retrain.trigger import RetrainTrigger
from driftloop.serving.client import V2Client
from tests.fixtures.loop import function_client, post_event, wait_run, write_policy
from tests.fixtures.monitoring import MonitoringStack, start_monitoring


def wait_phase(svc: PromotionService, version: str, traffic: Traffic, samples,
               timeout_s: float = 90):
    """Keep traffic flowing while the canary bakes; the final promotion state."""
    deadline = time.monotonic() + timeout_s
    i = 0
    while time.monotonic() < deadline:
        p = svc.state("digits", version)
        if p is not None and p.phase not in ("gate", "canary"):
            return p
        traffic.send(samples[i % len(samples):][:25] or samples[:25])
        i += 25
        time.sleep(0.2)
    raise TimeoutError(f"digits v{version} still {svc.state('digits', version)}")


@contextmanager
def restored_champion(settings, registry: Registry, model: str) -> Iterator[str]:
    """The session MLServer's ``model`` serves its champion again after the test, with
    no canary: later tests read it."""
    champion = registry.alias(model, "champion")
    try:
        yield champion
    finally:
        if registry.alias(model, "challenger") is not None:
            registry.clear_alias(model, "challenger")
        if registry.alias(model, "champion") != champion:
            registry.set_alias(model, "champion", champion, reason="restore after test")
        routing.save(registry.store, routing.all_to(model, champion))
        registry.set_challenger_weight(model, 0)
        with V2Client(settings.resolved_serving_url, timeout_s=60) as c:
            c.load(model)
            assert c.infer_tensor(model, [[0.0] * 64], emit=False).version == champion


@pytest.fixture
def monitoring_of_mlserver(mlserver, tmp_path) -> Iterator[MonitoringStack]:
    """Prometheus (with Pushgateway and Alertmanager) scraping the session MLServer, so the
    canary guard has request, error and latency evidence."""
    stack = start_monitoring(tmp_path / "monitoring",
                             serving_metrics_port=mlserver.settings.serving_metrics_port)
    yield stack
    stack.stop()


@pytest.mark.timeout(400)
def test_drift_to_promotion_then_worse_candidate_rolled_back(mlserver, kafka,
                                                              monitoring_of_mlserver, tmp_path):
    monitoring = monitoring_of_mlserver
    settings = mlserver.settings.model_copy(update={
        "policy_dir": write_policy(tmp_path / "policies"),
        "prometheus_url": monitoring.prometheus_url,
        "pushgateway_url": monitoring.pushgateway_url,
        "serving_url": mlserver.url,
        "drift_min_records": 30,
        "drift_window_s": 600.0,
    })
    store = open_store(settings.resolved_blob_url, settings)
    registry = Registry(store)
    with restored_champion(settings, registry, "digits"):
        run_loop(settings, store, registry, monitoring, kafka)


def run_loop(settings, store, registry: Registry, monitoring: MonitoringStack, kafka) -> None:
    began = time.time()
    runs = RunStore(store)
    champion = registry.alias("digits", "champion")
    trainer = trainer_for("digits")
    _, holdout = trainer.base()
    _save_profile(store, trainer, "digits", champion, registry.artifact("digits", champion),
                  holdout)
    # No Flink join on the session fixtures: the app writes its labeled records itself
    # (tests/e2e/test_loop_stack.py runs the loop with labels from the join).
    traffic = Traffic(settings, settings.serving_url, intake_url=None, store=store, app="e2e-app")
    timings: dict[str, float] = {}

    # 1. Healthy traffic, then injected drift: digits rotated by 90 degrees.
    before = traffic.send(digit_samples(60, rotate=False, seed=1))
    assert before.accuracy > 0.9
    drifted = traffic.send(digit_samples(240, rotate=True, seed=2))
    assert drifted.accuracy < 0.4, drifted.accuracy

    # 2. drift-check: drift on the prediction distribution, quality to the Pushgateway.
    # The window holds this test's records only (the topics are shared with other tests).
    settings = settings.model_copy(update={"drift_window_s": time.time() - began + 1.0})
    check = DriftCheckService(settings, store=store)
    result = check.check("digits", None)
    check.close()
    assert result["event"] is not None, result["verdict"]
    drift_events = [e for e in kafka.read_events(topics.EVENTS)
                    if e.type == ev.DRIFT_DETECTED and e.id == result["event"]["id"]]
    assert len(drift_events) == 1

    # 3. Alertmanager fires the quality alert (real rule, real Prometheus).
    alert = monitoring.webhook.wait_for("DriftloopQualityLow", timeout_s=60, model="digits")
    trigger = RetrainTrigger(settings, store=store)
    client = function_client("retrain-trigger", "retrain_trigger", trigger)
    t0 = time.monotonic()
    r = client.post("/", json={"version": "4", "status": "firing", "alerts": [alert]})
    assert r.status_code == 200, r.text
    decision = r.json()["results"][0]
    assert decision["run_id"], decision
    quality_rule = next(x for x in decision["decision"]["rules"] if x["rule"] == "quality")
    assert quality_rule["fired"] and quality_rule["value"] < 0.4  # read back from Prometheus
    # The drift event arrives too (through the broker): same model, within the cooldown.
    late = post_event(client, drift_events[0]).json()
    assert late["run_id"] is None
    assert late["decision"]["blocked_by"] in ("cooldown", "concurrency")

    # 4. The training run registers v2 and emits model.trained.
    run = wait_run(runs, "digits", decision["run_id"])
    assert run.status == "succeeded", run.error
    timings["trained_s"] = time.monotonic() - t0
    trained = next(e for e in kafka.read_events(topics.EVENTS)
                   if e.type == ev.MODEL_TRAINED and e.data.get("run_id") == run.run_id)

    # 5. promote: gate, canary at 30%, bake with live quality per version, promotion.
    promoter = PromotionService(settings, store=store)
    pclient = function_client("promote", "promote", promoter)
    r = post_event(pclient, trained)
    assert r.status_code == 202 and r.json()["phase"] == "canary", r.text
    assert r.json()["gate"]["passed"] and r.json()["gate"]["on"] == "recent"
    assert registry.alias("digits", "challenger") == run.version
    rotated = digit_samples(400, rotate=True, seed=3)
    canary = traffic.send(rotated[:60])
    assert set(canary.by_version) == {champion, run.version}  # traffic is split
    final = wait_phase(promoter, run.version, traffic, rotated[60:])
    assert final.phase == "promoted", final.reason
    # Promoted on evidence: Prometheus counted the challenger's requests and latency.
    checks = {c["name"]: c for c in final.verdicts[-1]["checks"]}
    assert all(c["judged"] and c["ok"] for c in checks.values()), checks
    assert checks["error_rate"]["value"] == 0.0 and checks["latency"]["value"] > 0
    timings["promoted_s"] = time.monotonic() - t0
    assert registry.alias("digits", "champion") == run.version
    assert registry.alias("digits", "challenger") is None

    # 6. The new version serves all traffic on the champion endpoint; quality recovered.
    after = traffic.send(digit_samples(80, rotate=True, seed=4))
    assert set(after.by_version) == {run.version}
    assert after.accuracy > 0.85, after.accuracy
    promoted = [e for e in kafka.read_events(topics.EVENTS) if e.type == ev.MODEL_PROMOTED
                and e.data.get("version") == run.version]
    assert promoted and promoted[-1].data["previous_version"] == champion

    # 7. A deliberately worse candidate: the offline gate is opened wide so the canary
    #    has to catch it; the bake sees its quality and rolls it back.
    write_policy(settings.policy_dir, promotion={"margin": -1.0, "max_holdout_drop": 1.0})
    policy = load_policy(settings.policy_dir, "digits")
    bad = train_model(settings, policy, run_id="worse", params={"C": 0.01}, store=store)
    bad_event = next(e for e in kafka.read_events(topics.EVENTS)
                     if e.type == ev.MODEL_TRAINED and e.data.get("run_id") == "worse")
    r = post_event(pclient, bad_event)
    assert r.json()["phase"] == "canary", r.text
    final = wait_phase(promoter, bad.version, traffic, rotated)
    assert final.phase == "rolledback" and "quality" in final.reason, final.reason
    assert registry.alias("digits", "champion") == run.version
    assert registry.alias("digits", "challenger") is None
    with V2Client(settings.serving_url) as c:
        assert c.infer_tensor("digits", [rotated[0][0]]).version == run.version
    rolled = [e for e in kafka.read_events(topics.EVENTS) if e.type == ev.MODEL_ROLLEDBACK
              and e.data.get("version") == bad.version]
    assert rolled and rolled[-1].data["restored_version"] == run.version
    print(f"loop timings: {timings}")
    traffic.close()
    trigger.close()
    promoter.close()
