"""Gate, bake guard, routing split, Seldon Experiment and the Thompson-sampling bandit."""

from __future__ import annotations

import math

import pytest

from driftloop.policy import parse_policy
from driftloop.promotion import bandit, routing
from driftloop.promotion.gate import judge as gate
from driftloop.promotion.guard import VersionStats
from driftloop.promotion.guard import judge as guard

POLICY = parse_policy({"model": "digits", "promotion": {
    "margin": 0.01, "max_holdout_drop": 0.05, "min_canary_samples": 20,
    "max_error_rate": 0.05, "max_latency_ratio": 2.0, "max_quality_drop": 0.02,
    "min_latency_requests": 25}})


def scores(ch_r: float, cp_r: float, ch_h: float, cp_h: float) -> dict[str, float]:
    return {"challenger_recent": ch_r, "champion_recent": cp_r,
            "challenger_holdout": ch_h, "champion_holdout": cp_h}


def test_gate_prefers_recent_data_and_guards_the_holdout() -> None:
    passed = gate(POLICY, scores(0.95, 0.10, 0.98, 0.99), n_recent=100)
    assert passed.passed and passed.on == "recent" and "gain +0.8500" in passed.detail
    forgot = gate(POLICY, scores(0.95, 0.10, 0.80, 0.99), n_recent=100)
    assert not forgot.passed and "drop +0.1900" in forgot.detail
    no_gain = gate(POLICY, scores(0.105, 0.10, 0.99, 0.99), n_recent=100)
    assert not no_gain.passed
    few = gate(POLICY, scores(0.95, 0.10, 0.99, 0.99), n_recent=5)
    assert few.on == "holdout" and not few.passed  # equal on the holdout: no margin
    nan = gate(POLICY, scores(math.nan, math.nan, 0.995, 0.98), n_recent=0)
    assert nan.on == "holdout" and nan.passed


def test_gate_direction_for_error_rates() -> None:
    speech = parse_policy({"model": "speech", "promotion": {"margin": 0.01}})
    assert gate(speech, scores(0.10, 0.30, 0.10, 0.11), n_recent=50).passed
    assert not gate(speech, scores(0.30, 0.10, 0.10, 0.11), n_recent=50).passed


def test_guard_waits_then_passes_or_rolls_back() -> None:
    champ = VersionStats("1", requests=100, errors=0, p99_s=0.01, quality=0.5, samples=80,
                         scrape_coverage=1.0)
    early = guard(POLICY, champ, VersionStats("2", 10, 0, 0.012, 0.9, 5), final=False)
    assert early.verdict == "wait"
    good = guard(POLICY, champ, VersionStats("2", 30, 0, 0.012, 0.95, 25), final=True)
    assert good.verdict == "ok", good.explain()
    worse = guard(POLICY, champ, VersionStats("2", 30, 0, 0.012, 0.40, 25), final=False)
    assert worse.verdict == "rollback" and "quality" in worse.explain()
    errors = guard(POLICY, champ, VersionStats("2", 30, 6, 0.012, None, 0), final=False)
    assert guard(POLICY, champ, VersionStats("2", 3, 1, 0.012, None, 0), final=False
                 ).verdict == "wait"  # one error in three requests: not judged yet
    assert errors.verdict == "rollback" and errors.checks[0].name == "error_rate"
    slow = guard(POLICY, champ, VersionStats("2", 60, 0, 0.25, 0.95, 25), final=False)
    assert slow.verdict == "rollback" and any(c.name == "latency" and not c.ok
                                              for c in slow.checks)
    # A few ms slower is no reason to roll back; a p99 of a handful of requests is no
    # evidence either way: the guard waits for more.
    assert guard(POLICY, champ, VersionStats("2", 60, 0, 0.04, 0.95, 25), final=True
                 ).verdict == "ok"
    few = guard(POLICY, champ, VersionStats("2", 20, 0, 0.9, 0.95, 25), final=True)
    assert few.verdict == "wait" and "needs 25 to judge p99" in few.reason
    starved = guard(POLICY, champ, VersionStats("2", 30, 0, 0.012, 0.99, 3), final=True)
    assert starved.verdict == "wait" and "needs 20" in starved.reason
    starved = guard(POLICY, champ, VersionStats("2", 30, 0, 0.012, 0.99, 3), final=True,
                    expired=True)
    assert starved.verdict == "rollback"
    assert starved.reason.startswith("no evidence: quality: 3 labeled v2 samples, needs 20")


def test_guard_without_quality_still_needs_the_policys_requests_for_errors() -> None:
    """A bandit judges by rewards (quality=False): the labeled-quality check is left out,
    but one failed request among two is still no verdict on the error rate."""
    champ = VersionStats("1", requests=100, errors=0, p99_s=0.01, quality=None, samples=0,
                         scrape_coverage=1.0)
    early = guard(POLICY, champ, VersionStats("2", 2, 1, 0.012, None, 0), final=True,
                  quality=False)
    assert early.verdict == "wait" and "needs 20" in early.reason, early.reason
    assert "quality" not in {c.name for c in early.checks}
    judged = guard(POLICY, champ, VersionStats("2", 30, 0, 0.012, None, 0), final=True,
                   quality=False)
    assert judged.verdict == "ok", judged.reason
    failing = guard(POLICY, champ, VersionStats("2", 30, 6, 0.012, None, 0), final=False,
                    quality=False)
    assert failing.verdict == "rollback" and "error_rate" in failing.reason


def test_guard_without_metrics_waits_then_rolls_back_for_lack_of_evidence() -> None:
    """Prometheus unreachable (or the model server not scraped): quality alone never
    promotes; the bake waits, then rolls back naming what was missing."""
    champ = VersionStats("1", None, None, None, quality=0.5, samples=80)
    blind = VersionStats("2", None, None, None, quality=0.99, samples=60)
    why = {"metrics": "Prometheus at http://127.0.0.1:9 unavailable: connection refused"}
    v = guard(POLICY, champ, blind, final=True, unavailable=why)
    assert v.verdict == "wait"
    assert v.reason.startswith("waiting for evidence: error_rate: no request metrics for v2")
    assert "connection refused" in v.reason and "latency" in v.reason
    assert {c.name: c.judged for c in v.checks} == {"error_rate": False, "latency": False,
                                                    "quality": True, "scrape_coverage": False}
    end = guard(POLICY, champ, blind, final=True, expired=True, unavailable=why)
    assert end.verdict == "rollback" and end.reason.startswith("no evidence: error_rate")
    # Not scraped: Prometheus answers, without series of the model.
    unscraped = guard(POLICY, champ, blind, final=True, expired=True)
    assert "no request metrics for v2" in unscraped.reason and "not scraped" in unscraped.reason


def test_guard_needs_enough_requests_latency_and_samples_of_both_versions() -> None:
    champ = VersionStats("1", 100, 0, 0.01, quality=0.5, samples=80)
    few = guard(POLICY, champ, VersionStats("2", 5, 0, 0.01, 0.99, 60), final=True,
                expired=True)
    assert few.verdict == "rollback" and "5 challenger requests counted, needs 20" in few.reason
    no_p99 = guard(POLICY, VersionStats("1", 100, 0, None, 0.5, 80),
                   VersionStats("2", 60, 0, 0.01, 0.99, 60), final=True)
    assert no_p99.verdict == "wait" and "no p99 latency for v1" in no_p99.reason
    no_champion_quality = guard(POLICY, VersionStats("1", 100, 0, 0.01, None, 0),
                                VersionStats("2", 60, 0, 0.01, 0.99, 60), final=True)
    assert no_champion_quality.verdict == "wait"
    assert "0 labeled v1 samples, needs 20" in no_champion_quality.reason
    # A failing check with evidence rolls back at once, before the bake ends.
    bad = guard(POLICY, champ, VersionStats("2", 40, 10, None, None, 0), final=False)
    assert bad.verdict == "rollback" and bad.reason.startswith("canary failed: error_rate")


def test_guard_needs_prometheus_scrapes_across_the_bake() -> None:
    """Increases since the canary started pass over a time Prometheus did not scrape: a
    bake scraped for less than min_scrape_coverage (0.8 by default) is missing evidence,
    'wait' then 'rollback' at expiry, however good the other figures."""
    def stats(version: str, coverage: float | None) -> VersionStats:
        return VersionStats(version, 100, 0, 0.01, 0.9, 80, scrape_coverage=coverage)

    gap = guard(POLICY, stats("1", 0.35), stats("2", 0.3), final=True)
    assert gap.verdict == "wait", gap.reason
    check = {c.name: c for c in gap.checks}["scrape_coverage"]
    assert not check.judged and (check.value, check.limit) == (0.35, 0.8)
    assert "Prometheus scraped 35% of the bake (v1's requests; limit 80%)" in gap.reason
    end = guard(POLICY, stats("1", 0.35), stats("2", 0.3), final=True, expired=True)
    assert end.verdict == "rollback"
    assert end.reason == "no evidence: scrape_coverage: " + check.detail, end.reason
    # Unreadable (Prometheus down) is missing evidence too, with why.
    why = {"metrics": "Prometheus at http://127.0.0.1:9 unavailable: connection refused"}
    down = guard(POLICY, stats("1", None), stats("2", None), final=True, expired=True,
                 unavailable=why)
    assert down.verdict == "rollback" and down.reason.startswith("no evidence: scrape_cov")
    assert "no scrape coverage for v2 or v1 (Prometheus at" in down.reason, down.reason
    # Above the limit (the best-covered version: the challenger's series starts with its
    # first answer) every check is judged: the canary passes.
    covered = guard(POLICY, stats("1", 0.95), stats("2", 0.7), final=True)
    assert covered.verdict == "ok", covered.reason
    assert {c.name: c.value for c in covered.checks}["scrape_coverage"] == 0.95
    assert guard(POLICY, stats("1", 0.8), stats("2", None), final=True).verdict == "ok"
    # The policy may waive it; a bandit (no bake window) leaves it out.
    lax = parse_policy({"model": "digits", "promotion": {
        **POLICY.promotion.model_dump(include={"min_canary_samples", "min_latency_requests"}),
        "min_scrape_coverage": 0}})
    assert guard(lax, stats("1", 0.1), stats("2", 0.1), final=True).verdict == "ok"
    assert guard(POLICY, stats("1", 0.1), stats("2", 0.1), final=True,
                 coverage=False).verdict == "ok"


def test_scrape_coverage_counts_the_bake_with_two_intervals_of_slack() -> None:
    """Samples over the bake's scrape intervals less two (the first scrape after the start
    and the last one not stored yet), capped at 1; after the bake it stays fixed."""
    from driftloop.promotion.guard import Observer
    from driftloop.settings import Settings

    settings = Settings(scrape_interval_s=0.5)
    obs = Observer(settings, "digits", "accuracy", since_ms=0, until_ms=30_000)
    assert obs._coverage(58, now_ms=30_000) == 1.0  # 60 intervals, two of slack
    assert obs._coverage(60, now_ms=30_000) == 1.0
    assert obs._coverage(20, now_ms=90_000) == pytest.approx(20 / 58)  # 20 s of 30 scraped
    assert obs._coverage(10, now_ms=6_000) == pytest.approx(1.0)  # the bake so far
    assert obs._coverage(1, now_ms=1_000) == 1.0  # too early to miss anything
    assert obs._coverage(None, now_ms=30_000) is None


def test_gate_judges_the_challenger_alone_when_the_champion_is_broken() -> None:
    from driftloop.promotion.gate import judge_alone, run_gate

    policy = parse_policy({"model": "digits", "triggers": {"quality": {"threshold": 0.85}}})
    good = {"challenger_recent": math.nan, "challenger_holdout": 0.97}
    r = judge_alone(policy, good, 0, "champion v1's artifact is missing")
    assert r.passed and r.champion is None and "judged alone" in r.detail
    assert r.to_dict()["champion_holdout"] is None
    weak = judge_alone(policy, {"challenger_recent": 0.95, "challenger_holdout": 0.5}, 50, "x")
    assert not weak.passed and "holdout 0.5000" in weak.detail
    no_bar = judge_alone(POLICY, good, 0, "champion gone")
    assert not no_bar.passed and "no quality threshold" in no_bar.detail

    class Trainer:
        def size(self, data):
            return 0

        def score(self, artifact, data):
            if b"broken" in artifact["m"]:
                raise ValueError("unpickling failed")
            return 0.97

    out = run_gate(policy, {"m": b"ok"}, {"m": b"broken"}, None, None, Trainer())
    assert out.passed and "champion cannot be scored (ValueError: unpickling failed)" in \
        out.champion_problem
    rejected = run_gate(policy, {"m": b"broken"}, {"m": b"ok"}, None, None, Trainer())
    assert not rejected.passed and "challenger cannot be scored" in rejected.detail


def test_versions_must_be_registry_versions() -> None:
    from driftloop.errors import ValidationFailed
    from driftloop.promotion.service import check_version

    assert check_version("12") == "12"
    for bad in ("../1", "", "0", "01", "1" * 19, "x" * 100_000, 3, None, "1\n"):
        with pytest.raises(ValidationFailed) as e:
            check_version(bad)
        assert e.value.fields[0].field == "version" and e.value.fields[0].rule == "version"


def test_routing_split_is_sticky_and_weighted() -> None:
    r = routing.canary("digits", "1", "2", 0.2)
    picks = [routing.pick(r, f"req-{i}") for i in range(5000)]
    share = picks.count("2") / len(picks)
    assert 0.17 < share < 0.23
    assert set(picks) == {None, "2"}  # the champion is served by its own endpoint
    assert routing.pick(r, "req-7") == routing.pick(r, "req-7")
    assert routing.pick(routing.all_to("digits", "2"), "x") is None
    assert routing.pick(None, "x") is None
    back = routing.Routing.from_dict(r.to_dict())
    assert back.weight_of("2") == pytest.approx(0.2) and back.weight_of("9") == 0.0


def test_experiment_manifest_matches_the_weights() -> None:
    doc = routing.experiment_manifest("digits", routing.canary("digits", "1", "2", 0.1))
    assert doc["kind"] == "Experiment" and doc["apiVersion"] == "mlops.seldon.io/v1alpha1"
    assert doc["spec"]["default"] == "digits-1"
    assert doc["spec"]["candidates"] == [{"name": "digits-1", "weight": 90},
                                         {"name": "digits-2", "weight": 10}]


def test_thompson_weights_favour_the_better_version() -> None:
    arms = {"1": bandit.Arm(200, 100.0, 100.0), "2": bandit.Arm(200, 160.0, 160.0)}
    w = bandit.thompson_weights(arms, floor=0.02, seed=1)
    assert w["2"] > 0.9 and math.isclose(sum(w.values()), 1.0, rel_tol=1e-6)
    assert w["1"] >= 0.02  # the floor keeps exploring
    even = bandit.thompson_weights({"1": bandit.Arm(2, 1.0, 1.0), "2": bandit.Arm(2, 1.0, 1.0)},
                                   seed=1)
    assert 0.3 < even["1"] < 0.7
    assert bandit.thompson_weights({}) == {}
