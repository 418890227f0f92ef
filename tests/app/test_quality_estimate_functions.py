"""The estimated quality as a retrain trigger and in the promotion guard: drift-check's
gauges pushed to the real Pushgateway, scraped by the real Prometheus, read back by
retrain-trigger (schedule tick) and by the guard's observer; the rules themselves pure."""

from __future__ import annotations

import json
from typing import Any

from driftloop import events as ev
from driftloop.monitoring import metrics
from driftloop.monitoring.estimate import Estimate
from driftloop.policy import RunHistory, Signals, decide, parse_policy
from driftloop.promotion.guard import Observer, VersionStats, judge
from driftloop.retrain.state import now_utc
from tests.fixtures.loop import function_client, post_event, wait_run, write_policy

RULE = {"threshold": 0.8, "min_samples": 50}


def _push(monitoring: Any, *estimates: tuple[str, float, int]) -> None:
    reg = metrics.check_registry(
        "digits",
        "1",
        None,
        estimated=[Estimate("digits", v, "accuracy", q, n) for v, q, n in estimates],
    )
    metrics.push(monitoring.pushgateway_url, "digits", reg)
    prom = monitoring.client()
    want = {(v, q) for v, q, _ in estimates}
    prom.wait_for(
        'driftloop_quality_estimated{model="digits"}',
        lambda s: {(x.labels["version"], x.value) for x in s} == want,
        timeout_s=30,
    )
    counts = {(v, float(n)) for v, _, n in estimates}
    prom.wait_for(
        'driftloop_quality_estimated_samples{model="digits"}',
        lambda s: {(x.labels["version"], x.value) for x in s} == counts,
        timeout_s=30,
    )


def _tick(client: Any) -> dict[str, Any]:
    tick = ev.new_event(
        ev.PING,
        "/apis/v1/namespaces/driftloop/pingsources/retrain-schedule",
        {"reason": "schedule", "task": "retrain"},
        datacontenttype=ev.JSON,
    )
    r = post_event(client, tick)
    assert r.status_code in (200, 202), r.text
    result: dict[str, Any] = r.json()["results"][0]
    return result


def _rule(result: dict[str, Any]) -> dict[str, Any]:
    rules = [x for x in result["decision"]["rules"] if x["rule"] == "estimated_quality"]
    assert len(rules) == 1
    return rules[0]


def test_estimated_quality_below_retrains_on_the_champions_estimate(
    loop_env: Any, monitoring: Any
) -> None:
    write_policy(loop_env.settings.policy_dir, triggers={"estimated_quality_below": RULE})
    settings = loop_env.settings.model_copy(update={"prometheus_url": monitoring.prometheus_url})
    from driftloop.retrain.trigger import RetrainTrigger

    service = RetrainTrigger(settings, store=loop_env.store)
    client = function_client("retrain-trigger", "retrain_trigger", service)
    try:
        # a canary's low estimate says nothing about the champion (v1), whose is fine
        _push(monitoring, ("1", 0.95, 200), ("7", 0.1, 500))
        result = _tick(client)
        assert result["decision"]["retrain"] is False
        assert _rule(result)["fired"] is False and _rule(result)["value"] == 0.95
        # low, but on too few predictions
        _push(monitoring, ("1", 0.62, 20))
        result = _tick(client)
        assert result["decision"]["retrain"] is False
        assert "needs 50" in _rule(result)["detail"]
        # low on enough predictions: retrain, the rule named as the reason
        _push(monitoring, ("1", 0.62, 200))
        result = _tick(client)
        assert result["decision"]["retrain"] is True and result["run_id"], json.dumps(
            result["decision"]
        )
        assert [x["rule"] for x in result["decision"]["rules"] if x["fired"]] == [
            "estimated_quality"
        ]
        assert wait_run(loop_env.runs, "digits", result["run_id"]).status == "succeeded"
    finally:
        metrics.delete(monitoring.pushgateway_url, "digits")
        client.close()
        service.close()


def test_guard_reads_estimates_per_version_and_fails_closed_without_them(
    loop_env: Any, monitoring: Any
) -> None:
    policy = parse_policy(
        {
            "model": "digits",
            "promotion": {
                "min_canary_samples": 0,
                "min_latency_requests": 1,
                "max_estimated_quality_drop": 0.03,
                "min_estimated_samples": 20,
            },
        }
    )
    settings = loop_env.settings.model_copy(update={"prometheus_url": monitoring.prometheus_url})
    try:
        _push(monitoring, ("1", 0.9, 300), ("2", 0.8, 60))
        obs = Observer(settings, "digits", "accuracy", since_ms=0).observe(
            ["1", "2"], with_quality=False
        )
        champ, chall = obs.stats["1"], obs.stats["2"]
        assert (champ.estimated, champ.estimated_samples) == (0.9, 300)
        assert (chall.estimated, chall.estimated_samples) == (0.8, 60)
        served = {"requests": 100.0, "errors": 0.0, "p99_s": 0.01}
        verdict = judge(
            policy,
            VersionStats("1", **served, estimated=0.9, estimated_samples=300),
            VersionStats("2", **served, estimated=0.8, estimated_samples=60),
            final=False,
        )
        assert verdict.verdict == "rollback" and "estimated_quality" in verdict.reason
        # only the champion has an estimate: missing evidence, never a pass
        _push(monitoring, ("1", 0.9, 300))
        obs = Observer(settings, "digits", "accuracy", since_ms=0).observe(
            ["1", "2"], with_quality=False
        )
        assert obs.stats["2"].estimated is None
        v = judge(
            policy,
            VersionStats("1", **served, estimated=0.9, estimated_samples=300),
            VersionStats("2", **served),
            final=True,
        )
        assert v.verdict == "wait" and "no estimated quality for v2" in v.reason
        v = judge(
            policy,
            VersionStats("1", **served, estimated=0.9, estimated_samples=300),
            VersionStats("2", **served),
            final=True,
            expired=True,
        )
        assert v.verdict == "rollback" and v.reason.startswith("no evidence")
    finally:
        metrics.delete(monitoring.pushgateway_url, "digits")


def test_estimated_rules_pure() -> None:
    policy = parse_policy({"model": "digits", "triggers": {"estimated_quality_below": RULE}})
    s = Signals(model="digits", now=now_utc(), trigger="schedule", schedule_tick=True)
    assert decide(policy, s, RunHistory()).retrain is False  # no estimate: nothing to judge
    low = Signals(
        model="digits",
        now=now_utc(),
        trigger="schedule",
        estimated_quality=0.7,
        estimated_quality_samples=60,
    )
    assert decide(policy, low, RunHistory()).retrain is True
    ok = Signals(
        model="digits",
        now=now_utc(),
        trigger="schedule",
        estimated_quality=0.85,
        estimated_quality_samples=60,
    )
    assert decide(policy, ok, RunHistory()).retrain is False
    alert = Signals(
        model="digits",
        now=now_utc(),
        trigger="alert:estimated_quality",
        alerts=frozenset({"estimated_quality"}),
    )
    assert decide(policy, alert, RunHistory()).retrain is True
    # wer: worse is higher
    speech = parse_policy(
        {
            "model": "speech",
            "triggers": {"estimated_quality_below": {"threshold": 0.3, "min_samples": 10}},
        }
    )
    high = Signals(
        model="speech",
        now=now_utc(),
        trigger="schedule",
        estimated_quality=0.4,
        estimated_quality_samples=20,
    )
    assert decide(speech, high, RunHistory()).retrain is True
    # a guard without the requirement ignores the estimate altogether
    plain = parse_policy(
        {"model": "digits", "promotion": {"min_canary_samples": 0, "min_latency_requests": 1}}
    )
    served = {"requests": 100.0, "errors": 0.0, "p99_s": 0.01, "scrape_coverage": 1.0}
    v = judge(plain, VersionStats("1", **served), VersionStats("2", **served), final=True)
    assert v.verdict == "ok" and all(c.name != "estimated_quality" for c in v.checks)


def test_bake_requiring_the_estimate_rolls_back_without_the_challengers(
    loop_env: Any, monitoring: Any
) -> None:
    """The promote service's bake reads the estimates from Prometheus: the champion's is
    there, the challenger's never comes, so the canary ends in a rollback naming it."""
    from driftloop.policy import load_policy
    from driftloop.promotion.service import PromotionService
    from driftloop.retrain.pipeline import train_model

    write_policy(
        loop_env.settings.policy_dir,
        promotion={
            "margin": -1.0,
            "max_holdout_drop": 1.0,
            "min_canary_samples": 0,
            "max_estimated_quality_drop": 0.05,
        },
    )
    policy = load_policy(loop_env.settings.policy_dir, "digits")
    v2 = train_model(
        loop_env.settings, policy, run_id="estimate-missing", store=loop_env.store, emit=False
    ).version
    # training fitted v2's calibration on its evaluation data (the holdout: 450 digits)
    from driftloop.monitoring.estimate import load_calibration

    cal = load_calibration(loop_env.store, "digits", v2)
    assert cal is not None and cal.samples == 450 and cal.metric == "accuracy"
    try:
        _push(monitoring, ("1", 0.9, 300))
        svc = PromotionService(
            loop_env.settings.model_copy(
                update={
                    "prometheus_url": monitoring.prometheus_url,
                    "promote_bake_s": 4.0,
                    "promote_evidence_grace_s": 3.0,
                }
            ),
            store=loop_env.store,
        )
        assert svc.start("digits", v2)["phase"] == "canary"
        final = svc.wait("digits", v2, timeout_s=120)
        assert final is not None and final.phase == "rolledback", final
        assert final.reason.startswith("no evidence:"), final.reason
        assert f"estimated_quality: no estimated quality for v{v2}" in final.reason
        last = {c["name"]: c for c in final.verdicts[-1]["checks"]}
        assert last["estimated_quality"]["judged"] is False
        assert loop_env.registry.alias("digits", "champion") == "1"
        svc.close()
    finally:
        metrics.delete(monitoring.pushgateway_url, "digits")
