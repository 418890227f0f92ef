"""Reward-driven serving and the shadow stage on the real stack: MLServer serving digits
from a registry on the real S3 server, its prediction events and the apps' feedback on the
real Kafka broker, Prometheus scraping the server for the guard, and the promote service
deciding from them."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from driftloop import events as ev
from driftloop import topics
from driftloop.blob import BlobStore, open_store
from driftloop.bus import ensure_topics, make_producer, publish
from driftloop.local.process import free_port
from driftloop.monitoring.window import output_rows, read_topic
from driftloop.promotion import routing
from driftloop.promotion.records import Promotion
from driftloop.promotion.rewards import state_key
from driftloop.promotion.service import PromotionService
from driftloop.registry import Registry
from driftloop.retrain.state import iso, now_utc
from driftloop.serving.bootstrap import ensure_models
from driftloop.serving.client import V2Client
from driftloop.serving.models import digits
from driftloop.serving.server import MLServerProcess
from driftloop.settings import Settings
from tests.fixtures.monitoring import start_monitoring

POLICY: dict[str, Any] = {
    "model": "digits",
    "training": {"backend": "local", "min_feedback_rows": 0},
    # The versions under test are judged live: the offline gate lets any through.
    "promotion": {
        "margin": -1.0,
        "max_holdout_drop": 1.0,
        "canary_weight": 0.3,
        "bake_s": 3,
        "poll_s": 0.5,
        "min_canary_samples": 0,
        "max_error_rate": 0.05,
        "min_latency_requests": 5,
        "max_latency_ratio": 50.0,
    },
}


@dataclass
class Stack:
    settings: Settings
    store: BlobStore
    registry: Registry
    folder: Path

    def policy(self, **promotion: Any) -> None:
        doc = json.loads(json.dumps(POLICY))
        doc["promotion"].update(promotion)
        (self.folder / "digits.yaml").write_text(yaml.safe_dump(doc))


@pytest.fixture(scope="module")
def stack(kafka: Any, s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A model server of its own (the session's is shared) scraped by a Prometheus."""
    state = tmp_path_factory.mktemp("bandit")
    policies = state / "policies"
    policies.mkdir()
    settings = Settings(
        state_dir=state,
        kafka_bootstrap=kafka.bootstrap,
        blob_url=f"s3://{s3.new_bucket()}/driftloop",
        s3_endpoint_url=s3.endpoint_url,
        s3_access_key_id=s3.access_key,
        s3_secret_access_key=s3.secret_key,
        serving_http_port=free_port(),
        serving_grpc_port=free_port(),
        serving_metrics_port=free_port(),
        serving_models="digits",
        policy_dir=policies,
        promote_evidence_grace_s=2.0,
    )
    ensure_topics(settings, [topics.PREDICTIONS, topics.FEEDBACK])
    store = open_store(settings.resolved_blob_url, settings)
    registry = Registry(store)
    ensure_models(registry, ["digits"])
    monitoring = start_monitoring(
        state / "monitoring", serving_metrics_port=settings.serving_metrics_port
    )
    process = MLServerProcess(settings, state / "server", state / "mlserver.log")
    process.start(timeout_s=180)
    settings = settings.model_copy(
        update={"prometheus_url": monitoring.prometheus_url, "serving_url": process.url}
    )
    try:
        yield Stack(settings, store, registry, policies)
    finally:
        process.stop()
        monitoring.stop()


def _register(stack: Stack, C: float) -> str:
    train, holdout = digits.split(digits.load_dataset())
    artifact = digits.train(train, {"kind": "logreg", "C": C})
    return stack.registry.register(
        "digits", artifact, lineage={"test": "bandit"}, metrics=digits.evaluate(artifact, holdout)
    ).version


def _broken(stack: Stack) -> str:
    """A version that loads but fails every inference (trained on 10 of 64 features)."""
    data = digits.load_dataset()
    narrow = replace(data, X=data.X[:, :10])
    artifact = digits.train(narrow, {"kind": "logreg", "C": 1.0})
    return stack.registry.register("digits", artifact, lineage={"test": "broken"}).version


def _reset(stack: Stack) -> str:
    """digits v1 the champion, no challenger, all traffic to it."""
    stack.registry.set_alias("digits", "champion", "1", reason="test reset")
    if stack.registry.alias("digits", "challenger"):
        stack.registry.clear_alias("digits", "challenger")
    stack.registry.set_challenger_weight("digits", 0)
    with V2Client(stack.settings.resolved_serving_url) as c:
        c.load("digits")
    return "1"


class Traffic:
    """An app: asks the champion's endpoint, rewards some versions' answers more."""

    def __init__(self, stack: Stack, rates: dict[str, float], tag: str) -> None:
        self.stack, self.rates, self.tag = stack, rates, tag
        self.client = V2Client(stack.settings.resolved_serving_url)
        self.producer = make_producer(stack.settings)
        self.rng = random.Random(7)
        self.x = digits.load_dataset().X[:1].tolist()
        self.answered: list[str] = []
        self.routed: list[dict[str, float]] = []  # the bandit's weights, read each round
        self.n = 0

    def close(self) -> None:
        self.client.close()
        self.producer.close()

    def round(self, k: int = 10, *, feedback: bool = True) -> list[str]:
        got, events = [], []
        for _ in range(k):
            self.n += 1
            pred = self.client.infer_tensor("digits", self.x, request_id=f"{self.tag}-{self.n}")
            got.append(str(pred.version))
            p = self.rates.get(str(pred.version), 0.0)
            reward = 1.0 if self.rng.random() < p else 0.0
            events.append(
                ev.new_event(
                    ev.FEEDBACK,
                    "test-app",
                    ev.FeedbackData(prediction_id=pred.id, model="digits", reward=reward, truth=0),
                )
            )
        if feedback:
            publish(self.producer, topics.FEEDBACK, events)
        self.answered += got
        r = routing.load(self.stack.store, "digits")
        if r is not None and r.mode == "bandit":
            self.routed.append(dict(r.weights))
        return got


def _until_final(
    svc: PromotionService, version: str, traffic: Traffic, timeout_s: float
) -> Promotion:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        p = svc.state("digits", version)
        if p is not None and p.phase in ("promoted", "rolledback", "rejected", "abandoned"):
            return p
        try:
            traffic.round()
        except Exception:
            pass  # a failing arm answers errors: the app carries on
        time.sleep(0.05)
    raise TimeoutError(f"v{version} still {svc.state('digits', version)}")


def test_bandit_shifts_traffic_to_the_better_version_and_promotes_it(stack: Stack) -> None:
    champion = _reset(stack)
    challenger = _register(stack, 0.5)
    stack.policy(
        mode="bandit",
        bandit={
            "reward": "binary",
            "floor": 0.05,
            "threshold": 0.95,
            "min_rewards": 15,
            "refresh_s": 0.5,
            "max_s": 240,
        },
    )
    svc = PromotionService(stack.settings, store=stack.store)
    traffic = Traffic(stack, {champion: 0.2, challenger: 0.9}, "bandit-a")
    try:
        assert svc.start("digits", challenger)["phase"] == "canary"
        first = traffic.round(40)
        final = _until_final(svc, challenger, traffic, timeout_s=240)
    finally:
        traffic.close()
        svc.close()
    assert final.phase == "promoted", final.reason
    assert final.reason.startswith("bandit promoted: v2 is best with P(best)")
    assert f"v{champion}: P(best)" in final.reason and "mean reward" in final.reason
    assert "error_rate: challenger" in final.reason  # the guard's figures too
    # The canary started at 30%; rewards moved the weights towards the better version (as
    # written where the model server reads them), and the answers followed. The answers'
    # share trails the weights (the server reloads them), so it is compared, not bounded.
    assert max((w.get(challenger, 0.0) for w in traffic.routed), default=0.0) >= 0.6, \
        traffic.routed[-5:]
    share = [a.count(challenger) / len(a) for a in (first, traffic.answered[-30:])]
    assert share[1] > share[0], share
    # The weights and the figures they rest on were written where routing is read.
    weights = [v for v in svc.verdicts("digits", challenger) if v["verdict"] == "wait"]
    assert any("P(best)" in v["reason"] for v in weights)
    state = json.loads(stack.store.get(state_key("digits", challenger)))
    assert state["arms"][challenger]["n"] >= 15 and state["arms"][champion]["n"] >= 15
    assert routing.load(stack.store, "digits").champion == challenger  # type: ignore[union-attr]
    assert stack.registry.alias("digits", "champion") == challenger


def test_a_failing_bandit_arm_is_rolled_back_by_the_guard(stack: Stack) -> None:
    champion = _reset(stack)
    broken = _broken(stack)
    stack.policy(
        mode="bandit",
        canary_weight=0.5,
        bandit={"min_rewards": 1000, "refresh_s": 0.5, "max_s": 240},
    )
    svc = PromotionService(stack.settings, store=stack.store)
    # The offline gate would refuse this version: start its bandit the way the gate's
    # pass does, so the live guard is what is tested.
    lease = svc.ledger.acquire("digits", broken, "promotion")
    assert lease is not None
    policy = svc.policy("digits")
    svc.steps.start_canary(policy, "digits", broken, champion)
    svc.ledger.record(
        Promotion(
            "digits",
            broken,
            champion,
            "canary",
            iso(now_utc()),
            canary_started_ms=int(time.time() * 1000),
        )
    )
    svc.bakes.start("digits", broken)
    traffic = Traffic(stack, {champion: 0.5}, "bandit-b")
    try:
        final = _until_final(svc, broken, traffic, timeout_s=180)
    finally:
        traffic.close()
        svc.close()
    assert final.phase == "rolledback", final.reason
    assert final.reason.startswith("canary failed: error_rate: challenger")
    assert "bandit: no winner yet" in final.reason
    assert stack.registry.alias("digits", "champion") == champion
    assert stack.registry.alias("digits", "challenger") is None


def test_shadow_then_canary_then_promotion(stack: Stack) -> None:
    champion = _reset(stack)
    challenger = _register(stack, 0.3)
    # The shadow's process starts (imports, loads v2, connects to Kafka) within the stage.
    stack.policy(
        mode="canary",
        shadow={"duration_s": 30, "min_requests": 20, "min_agreement": 0.5, "min_labeled": 10},
    )
    svc = PromotionService(stack.settings, store=stack.store)
    traffic = Traffic(stack, {}, "shadow-a")
    t0 = time.time()
    try:
        assert svc.start("digits", challenger)["phase"] == "shadow"
        during = []
        while svc.state("digits", challenger).phase == "shadow":  # type: ignore[union-attr]
            got = traffic.round()
            # The canary's traffic is written before the server reloads: a round that ended
            # with the traffic still in shadow mode was served entirely in shadow.
            if stack.registry.traffic_mode("digits") == "shadow":
                during += got
            time.sleep(0.05)
        final = _until_final(svc, challenger, traffic, timeout_s=120)
    finally:
        traffic.close()
        svc.close()
    # Shadow answers never reached the app: every answer during the shadow was the champion's.
    assert len(during) >= 20 and set(during) == {champion}
    mine = [h for h in svc.history("digits") if h["version"] == challenger]
    phases = [h["phase"] for h in mine]
    assert phases[-4:] == ["gate", "shadow", "canary", "promoted"], mine[-1]["reason"]
    shadow_pass = [
        h for h in svc.history("digits") if h["version"] == challenger and h["phase"] == "canary"
    ][-1]
    assert (
        shadow_pass["reason"].startswith("shadow passed:")
        and "agreement" in shadow_pass["reason"]
        and "accuracy shadow" in shadow_pass["reason"]
    )
    assert final.phase == "promoted"
    # Recorded with shadow: true, under ids of their own, naming the champion's prediction.
    window = read_topic(
        stack.settings,
        topics.PREDICTIONS,
        window_s=time.time() - t0 + 5,
        max_records=100_000,
        model="digits",
    )
    shadows = [r for r in window.records if r.data.get("shadow") is True]
    served = [r for r in window.records if r.data.get("shadow") is not True]
    assert len(shadows) >= 20
    served_ids = {r.event.id for r in served}
    assert all(
        r.data["version"] == challenger
        and r.event.id.endswith("~shadow")
        and r.data["shadow_of"] in served_ids
        for r in shadows
    )
    # Out of user-facing figures: the drift window's output rows are the served answers.
    assert len(output_rows(window.records)) == len(served)


def test_a_restarted_reward_reader_resumes_without_counting_twice(stack: Stack) -> None:
    """The bandit's state (arms, offsets, predictions awaiting a reward) is in the blob
    store: a new reader (a restarted promote function) goes on where the last stopped."""
    from driftloop.promotion.rewards import RewardReader

    producer = make_producer(stack.settings)

    def send(topic: str, events: list[ev.Event]) -> None:
        publish(producer, topic, events)

    def prediction(pid: str, version: str) -> ev.Event:
        return ev.new_event(
            ev.PREDICTION,
            "driftloop/serving/ocr",
            ev.PredictionData(model="ocr", version=version, output={"text": "x"}),
            id=pid,
            model="ocr",
        )

    def reward(pid: str, value: float) -> ev.Event:
        return ev.new_event(
            ev.FEEDBACK, "test-app", ev.FeedbackData(prediction_id=pid, model="ocr", reward=value)
        )

    since = int(time.time() * 1000) - 1000
    tag = f"resume-{time.time_ns()}"
    try:
        send(topics.PREDICTIONS, [prediction(f"{tag}-{i}", "77") for i in (1, 2, 3)])
        send(topics.FEEDBACK, [reward(f"{tag}-1", 1.0), reward(f"{tag}-2", 1.0)])
        first = RewardReader(stack.settings, stack.store, "ocr", "77", ["1", "77"], since)
        arms = first.poll()
        first.close()
        assert (arms["77"].n, arms["77"].total, arms["1"].n) == (2, 2.0, 0)
        time.sleep(0.05)
        later = int(time.time() * 1000)
        send(topics.FEEDBACK, [reward(f"{tag}-3", 0.0), reward(f"{tag}-1", 1.0)])
        send(topics.PREDICTIONS, [prediction(f"{tag}-4", "1")])
        send(topics.FEEDBACK, [reward(f"{tag}-4", 1.0)])
        # Started from its state, not from the time it is given (a reader without the
        # state would begin after -3's prediction and never join its reward).
        again = RewardReader(stack.settings, stack.store, "ocr", "77", ["1", "77"], later)
        arms = again.poll()
        again.close()
    finally:
        producer.close()
    # -3's prediction was read before the restart and its reward after; -1's second
    # reward does not count again; -4 joined after the restart.
    assert (arms["77"].n, arms["77"].total) == (3, 2.0)
    assert (arms["1"].n, arms["1"].total) == (1, 1.0)
