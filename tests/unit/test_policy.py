"""The retrain policy: parsing, every rule, the limits, and explainable decisions."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from driftloop.errors import NotFound, ValidationFailed
from driftloop.policy import (
    Policy,
    RunHistory,
    Signals,
    decide,
    load_policy,
    parse_policy,
    policy_models,
)
from driftloop.settings import PROJECT_ROOT

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def policy(**triggers: object) -> Policy:
    return parse_policy({"model": "digits", "triggers": triggers,
                         "limits": {"cooldown_s": 600, "max_concurrent": 1}})


def test_every_shipped_policy_parses() -> None:
    folder = PROJECT_ROOT / "policies"
    assert "digits" in policy_models(folder)
    for model in policy_models(folder):
        p = load_policy(folder, model)
        assert p.model == model


def test_a_key_given_twice_is_refused_naming_it(tmp_path: Path) -> None:
    """A section pasted twice would otherwise run on whichever copy came last."""
    (tmp_path / "digits.yaml").write_text(
        "model: digits\npromotion:\n  bake_s: 20\n  bake_s: 2\n")
    with pytest.raises(ValidationFailed, match="'bake_s' appears twice") as e:
        load_policy(tmp_path, "digits")
    assert [f.field for f in e.value.fields] == ["digits.yaml"]


def test_bad_policy_names_every_field(tmp_path: Path) -> None:
    (tmp_path / "digits.yaml").write_text(yaml.safe_dump({
        "model": "digits",
        "triggers": {"quality": {"threshold": "high"}, "schedule": {"cron": "every day"}},
        "limits": {"max_concurrent": 0, "surprise": 1},
    }))
    with pytest.raises(ValidationFailed) as e:
        load_policy(tmp_path, "digits")
    fields = {f.field for f in e.value.fields}
    assert "digits.yaml.triggers.quality.threshold" in fields
    assert "digits.yaml.triggers.schedule.cron" in fields
    assert "digits.yaml.limits.max_concurrent" in fields
    assert "digits.yaml.limits.surprise" in fields


def test_missing_policy_and_mismatched_model(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        load_policy(tmp_path, "digits")
    (tmp_path / "ocr.yaml").write_text("model: digits\n")
    with pytest.raises(ValidationFailed, match="file"):
        load_policy(tmp_path, "ocr")


def test_no_rule_fires_without_evidence() -> None:
    p = policy(quality={"threshold": 0.9, "min_samples": 50}, drift={}, latency={"p99_s": 1})
    d = decide(p, Signals("digits", NOW, "schedule"), RunHistory())
    assert not d.retrain and d.blocked_by is None
    assert [r.rule for r in d.rules] == ["quality", "drift", "latency"]
    assert "no rule fired" in d.explain()


def test_quality_needs_min_samples_and_respects_direction() -> None:
    p = policy(quality={"threshold": 0.9, "min_samples": 50})
    few = decide(p, Signals("digits", NOW, "alert", quality=0.5, quality_samples=10), RunHistory())
    assert not few.retrain and "needs 50" in few.rules[0].detail
    many = decide(p, Signals("digits", NOW, "alert", quality=0.5, quality_samples=60),
                  RunHistory())
    assert many.retrain and many.fired[0].value == 0.5 and many.fired[0].threshold == 0.9
    ok = decide(p, Signals("digits", NOW, "alert", quality=0.95, quality_samples=60),
                RunHistory())
    assert not ok.retrain
    # WER is lower-is-better: 0.5 is worse than a 0.3 threshold.
    speech = parse_policy({"model": "speech", "triggers": {"quality": {"threshold": 0.3}}})
    assert decide(speech, Signals("speech", NOW, "x", quality=0.5, quality_samples=99),
                  RunHistory()).retrain


def test_feedback_volume_drift_latency_and_alerts() -> None:
    p = policy(feedback_volume={"min_events": 100}, drift={"min_share": 0.5},
               latency={"p99_s": 0.5}, quality={"threshold": 0.9})
    assert decide(p, Signals("digits", NOW, "feedback", feedback_since_training=100),
                  RunHistory()).retrain
    assert not decide(p, Signals("digits", NOW, "feedback", feedback_since_training=99),
                      RunHistory()).retrain
    assert not decide(p, Signals("digits", NOW, "drift", drift_detected=True, drift_share=0.25),
                      RunHistory()).retrain
    d = decide(p, Signals("digits", NOW, "drift", drift_detected=True, drift_share=0.75),
               RunHistory())
    assert [r.rule for r in d.fired] == ["drift"] and d.reasons()[0]["value"] == 0.75
    assert decide(p, Signals("digits", NOW, "x", latency_p99_s=0.8), RunHistory()).retrain
    alert = decide(p, Signals("digits", NOW, "alert:quality", alerts=frozenset({"quality"})),
                   RunHistory())
    assert alert.retrain and "alert" in alert.fired[0].detail


def test_schedule_fires_once_per_cron_period() -> None:
    p = policy(schedule={"cron": "0 3 * * *"})
    tick = Signals("digits", NOW, "schedule", schedule_tick=True)
    assert decide(p, tick, RunHistory()).retrain
    ran_today = RunHistory(last_started=NOW.replace(hour=3, minute=5))
    assert not decide(p, tick, ran_today).retrain
    ran_yesterday = RunHistory(last_started=NOW - timedelta(days=1))
    assert decide(p, tick, ran_yesterday).retrain
    assert not decide(p, Signals("digits", NOW, "drift"), ran_yesterday).retrain


def test_limits_cooldown_duplicate_concurrency() -> None:
    p = policy(drift={})
    s = Signals("digits", NOW, "drift", event_key="src\x1fe1", drift_detected=True)
    recent = RunHistory(last_started=NOW - timedelta(seconds=60))
    d = decide(p, s, recent)
    assert not d.retrain and d.blocked_by == "cooldown" and "540s left" in d.detail
    assert d.fired and "but cooldown" in d.explain()
    assert decide(p, s, RunHistory(last_started=NOW - timedelta(seconds=601))).retrain
    dup = decide(p, s, RunHistory(seen_events=frozenset({"src\x1fe1"})))
    assert dup.blocked_by == "duplicate"
    busy = decide(p, s, RunHistory(active=1))
    assert busy.blocked_by == "concurrency"
    manual = decide(p, Signals("digits", NOW, "manual", manual=True), recent)
    assert manual.retrain and manual.fired[0].rule == "manual"


def test_a_failed_run_starts_the_cooldown_and_failures_back_off() -> None:
    p = parse_policy({"model": "digits", "triggers": {"drift": {}},
                      "limits": {"cooldown_s": 600, "failure_backoff_s": 300,
                                 "max_failure_backoff_s": 3600}})
    s = Signals("digits", NOW, "drift", drift_detected=True)
    # One failure: the ordinary cooldown (it is longer than the first backoff).
    once = decide(p, s, RunHistory(last_started=NOW - timedelta(seconds=300),
                                   consecutive_failures=1))
    assert once.blocked_by == "cooldown" and "after 1 failed run(s)" in once.detail
    assert decide(p, s, RunHistory(last_started=NOW - timedelta(seconds=601),
                                   consecutive_failures=1)).retrain
    # Three failures in a row: 300 * 2^2 = 1200 s.
    three = RunHistory(last_started=NOW - timedelta(seconds=1100), consecutive_failures=3)
    d = decide(p, s, three)
    assert d.blocked_by == "cooldown" and "cooldown 1200s" in d.detail
    assert decide(p, s, RunHistory(last_started=NOW - timedelta(seconds=1201),
                                   consecutive_failures=3)).retrain
    # Capped, and manual runs are still allowed.
    many = RunHistory(last_started=NOW - timedelta(seconds=3500), consecutive_failures=40)
    assert "cooldown 3600s" in decide(p, s, many).detail
    assert decide(p, Signals("digits", NOW, "manual", manual=True), many).retrain


def test_decision_is_frozen_and_serialisable() -> None:
    d = decide(policy(drift={}), Signals("digits", NOW, "drift", drift_detected=True),
               RunHistory())
    with pytest.raises(FrozenInstanceError):
        d.retrain = False  # type: ignore[misc]
    body = d.to_dict()
    assert body["retrain"] is True and body["explain"].startswith("retrain digits: drift")
    assert body["rules"][0] == {"rule": "drift", "fired": True, "value": None,
                                "threshold": 0.0, "detail": body["rules"][0]["detail"]}
