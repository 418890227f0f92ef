"""Pure parts of reward-driven serving and the shadow stage: the posterior, its threshold,
the reward join and its resumable state, shadow figures and verdicts, the routing they
write (local record and Seldon Experiment)."""

from __future__ import annotations

import math

import pytest

from driftloop.errors import ValidationFailed
from driftloop.policy import parse_policy
from driftloop.promotion import bandit, routing
from driftloop.promotion.rewards import MAX_PENDING, RewardState
from driftloop.promotion.shadow import ShadowStats, compare, judge_shadow, shadow_id


def _binary(successes: int, n: int) -> bandit.Arm:
    return bandit.Arm(n, float(successes), float(successes))


def _arm(values: list[float]) -> bandit.Arm:
    a = bandit.Arm()
    for v in values:
        a = a.add(v)
    return a


def test_beta_posterior_prefers_more_successes_and_sums_to_one() -> None:
    p = bandit.prob_best({"1": _binary(30, 100), "2": _binary(80, 100)}, "binary", seed=3)
    assert p["2"] > 0.999 and math.isclose(sum(p.values()), 1.0)
    # Few rewards: nothing is certain either way.
    few = bandit.prob_best({"1": _binary(1, 2), "2": _binary(2, 2)}, "binary", seed=3)
    assert 0.1 < few["1"] < 0.5


def test_beta_posterior_matches_the_exact_probability() -> None:
    # Beta(2, 1) vs Beta(1, 2): P(X > Y) = 5/6 exactly.
    p = bandit.prob_best({"a": _binary(1, 1), "b": _binary(0, 1)}, "binary", draws=200_000, seed=7)
    assert abs(p["a"] - 5 / 6) < 0.005


def test_normal_posterior_for_continuous_rewards() -> None:
    hi = _arm([2.0, 2.5, 1.5, 2.2, 1.8] * 10)
    lo = _arm([1.0, 1.5, 0.5, 1.2, 0.8] * 10)
    p = bandit.prob_best({"1": lo, "2": hi}, "continuous", seed=1)
    assert p["2"] > 0.999
    # Same means: a coin toss.
    same = bandit.prob_best({"1": hi, "2": hi}, "continuous", draws=20_000, seed=1)
    assert 0.45 < same["1"] < 0.55
    # An arm with no reward yet could be anything: it is not ruled out.
    fresh = bandit.prob_best({"1": hi, "2": bandit.Arm()}, "continuous", seed=1)
    assert 0.3 < fresh["2"] < 0.7
    assert (
        hi.variance == pytest.approx(0.118, abs=0.01) and bandit.Arm(1, 1.0, 1.0).variance is None
    )


def test_weights_keep_the_floor_and_follow_the_posterior() -> None:
    w = bandit.weights({"1": 0.0, "2": 1.0}, floor=0.05)
    assert w == {"1": 0.05, "2": 0.95}
    w3 = bandit.weights({"1": 0.0, "2": 0.0, "3": 1.0}, floor=0.1)
    assert w3["1"] == w3["2"] == 0.1 and math.isclose(sum(w3.values()), 1.0)
    assert bandit.weights({"1": 0.5, "2": 0.5}, floor=0.9) == {"1": 0.5, "2": 0.5}
    assert bandit.weights({}, floor=0.1) == {}


def test_winner_needs_the_threshold_and_enough_rewards() -> None:
    arms = {"1": _binary(30, 100), "2": _binary(80, 100)}
    p = bandit.prob_best(arms, seed=1)
    d = bandit.decide(arms, p, threshold=0.95, min_rewards=20)
    assert d.winner == "2"
    text = d.explain()
    assert "v2 is best with P(best) 1.000 > 0.95" in text and "mean reward 0.800 over 100" in text
    assert bandit.decide(arms, p, threshold=0.95, min_rewards=101).winner is None
    even = {"1": _binary(50, 100), "2": _binary(52, 100)}
    d2 = bandit.decide(even, bandit.prob_best(even, seed=1), threshold=0.95, min_rewards=20)
    assert d2.winner is None and d2.explain().startswith("no winner yet")
    # Exactly at the threshold is not above it.
    assert bandit.decide(arms, {"1": 0.05, "2": 0.95}, threshold=0.95, min_rewards=1).winner is None


def test_rewards_join_by_prediction_id_in_either_order_and_count_once() -> None:
    s = RewardState(arms={"1": bandit.Arm(), "2": bandit.Arm()})
    s.prediction("a", "1")
    s.reward("a", 1.0)
    s.reward("b", 0.0)  # the reward before its prediction
    s.prediction("b", "2")
    s.reward("a", 1.0)  # a second reward for a: waits, never joins again
    s.prediction("c", "9")  # a version outside the bandit
    s.reward("c", 1.0)
    assert s.arms["1"] == bandit.Arm(1, 1.0, 1.0) and s.arms["2"] == bandit.Arm(1, 0.0, 0.0)
    assert (s.rewarded, s.ignored) == (2, 1)
    s.offsets = {"driftloop.feedback": {0: 12}}
    again = RewardState.from_dict(s.to_dict())
    assert again.arms == s.arms and again.offsets == s.offsets and again.early == s.early


def test_pending_halves_are_bounded() -> None:
    s = RewardState(arms={"1": bandit.Arm()})
    for i in range(MAX_PENDING + 10):
        s.prediction(f"p{i}", "1")
    assert len(s.answered) == MAX_PENDING and "p0" not in s.answered


def test_shadow_figures_from_answers_and_truth() -> None:
    champ = {"a": {"label": 1}, "b": {"label": 2}, "c": {"label": 3}, "d": {"label": 4}}
    shadow = {"a": {"label": 1}, "b": {"label": 2}, "c": {"label": 0}}
    stats = compare("digits", champ, shadow, {"a": 1, "c": 3})
    assert (stats.mirrored, stats.compared, stats.labeled) == (3, 3, 2)
    assert stats.agreement == pytest.approx(2 / 3)
    assert stats.champion_quality == 1.0 and stats.shadow_quality == 0.5
    assert shadow_id("abc") == "abc~shadow" and len(shadow_id("x" * 256)) <= 256


def _policy(**shadow: object):
    return parse_policy(
        {
            "model": "digits",
            "promotion": {
                "shadow": {
                    "duration_s": 5,
                    "min_requests": 3,
                    "min_agreement": 0.8,
                    "min_labeled": 2,
                    "max_quality_drop": 0.1,
                    **shadow,
                }
            },
        }
    )


def test_shadow_verdicts_fail_closed() -> None:
    pol = _policy()
    good = ShadowStats(10, 10, 0.9, 4, 0.9, 0.85)
    assert judge_shadow(pol, good, final=False, expired=False).verdict == "wait"
    ok = judge_shadow(pol, good, final=True, expired=False)
    assert ok.verdict == "ok" and "agreement 0.900" in ok.reason
    disagree = judge_shadow(pol, ShadowStats(10, 10, 0.5, 4, 0.9, 0.9), final=False, expired=False)
    assert disagree.verdict == "rollback" and "agreement 0.500 (min 0.8)" in disagree.reason
    worse = judge_shadow(pol, ShadowStats(10, 10, 0.9, 4, 0.9, 0.5), final=False, expired=False)
    assert worse.verdict == "rollback" and "quality drop" in worse.reason
    none = ShadowStats(0, 0, None, 0, None, None)
    assert judge_shadow(pol, none, final=True, expired=False).verdict == "wait"
    gone = judge_shadow(pol, none, final=True, expired=True)
    assert gone.verdict == "rollback" and gone.reason.startswith("no evidence from the shadow")


def test_policy_bandit_and_shadow_fields_are_ruled() -> None:
    pol = parse_policy(
        {
            "model": "digits",
            "promotion": {
                "mode": "bandit",
                "bandit": {"reward": "continuous", "threshold": 0.9, "floor": 0.1},
            },
        }
    )
    assert pol.promotion.bandit.reward == "continuous" and pol.promotion.shadow is None
    with pytest.raises(ValidationFailed) as e:
        parse_policy(
            {
                "model": "digits",
                "promotion": {"bandit": {"threshold": 0.4, "floor": 0.7, "reward": "stars"}},
            }
        )
    names = {f.field for f in e.value.fields}
    assert {
        "policy.promotion.bandit.threshold",
        "policy.promotion.bandit.floor",
        "policy.promotion.bandit.reward",
    } <= names


def test_shadow_routing_and_its_experiment_mirror() -> None:
    r = routing.shadow("digits", "1", "2")
    assert routing.challenger_share(r) == 0 and routing.pick(r, "any") is None
    doc = routing.experiment_manifest("digits", r)
    assert doc["spec"] == {
        "default": "digits-1",
        "candidates": [{"name": "digits-1", "weight": 100}],
        "mirror": {"name": "digits-2", "percent": 100},
    }
    back = routing.Routing.from_dict(r.to_dict())
    assert back.shadow == "2" and back.mode == "shadow"
    b = routing.Routing(
        "digits", "1", {"1": 0.3, "2": 0.7}, "bandit", figures={"p_best": {"1": 0.1, "2": 0.9}}
    )
    assert routing.Routing.from_dict(b.to_dict()).figures == b.figures
    assert "mirror" not in routing.experiment_manifest("digits", b)["spec"]


def test_shadow_answers_stay_out_of_quality_and_drift_rows() -> None:
    from driftloop import events as ev
    from driftloop.monitoring.quality import aggregate
    from driftloop.monitoring.window import Record, output_rows

    labeled = [
        {
            "model": "digits",
            "version": "1",
            "prediction_id": "a",
            "metric": "accuracy",
            "quality": 1.0,
            "feedback_id": "f1",
            "feedback_source": "app",
        },
        {
            "model": "digits",
            "version": "2",
            "prediction_id": "a~shadow",
            "shadow": True,
            "metric": "accuracy",
            "quality": 0.0,
            "feedback_id": "f2",
            "feedback_source": "app",
        },
    ]
    stats = aggregate(labeled, model="digits")
    assert [(s.version, s.mean, s.count) for s in stats] == [("1", 1.0, 1)]
    served = ev.new_event(
        ev.PREDICTION, "s", {"model": "digits", "version": "1", "output": {"label": 3}}, id="a"
    )
    mirrored = ev.new_event(
        ev.PREDICTION,
        "s",
        {
            "model": "digits",
            "version": "2",
            "output": {"label": 4},
            "shadow": True,
            "shadow_of": "a",
        },
        id="a~shadow",
    )
    rows = output_rows([Record(served, 0), Record(mirrored, 0)])
    assert [r["output.label"] for r in rows] == [3]
