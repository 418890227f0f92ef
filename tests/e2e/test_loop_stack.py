"""The loop through the local stack itself: the dispatcher carries drift.detected from
``driftloop.events`` to the retrain-trigger function and model.trained to the promote
function (both under functions-framework); MLServer serves; Prometheus scrapes it.

The rotated-digits traffic is an app's, entirely over V2 REST with its labels through
feedback-intake: the labeled records are Flink's join of the prediction events (carrying
``input_ref``) with that feedback, and the training run reads the pixels back from the
inputs the model server kept. With payload logging off, the run has no usable feedback
and is skipped: this test goes red."""

from __future__ import annotations

import pytest

from driftloop.blob import open_store
from driftloop.demo.bandit import run_bandit
from driftloop.demo.estimated import beside
from driftloop.demo.loop import run_loop
from driftloop.promotion import routing
from driftloop.registry import Registry
from driftloop.retrain.data import read_labeled
from driftloop.retrain.stackrun import loop_stack
from driftloop.retrain.state import RunStore


@pytest.mark.timeout(480)
def test_loop_on_the_local_stack(tmp_path):
    with loop_stack(tmp_path / "state", DRIFTLOOP_PROMOTE_BAKE_S="8") as (settings, endpoints):
        assert {"retrain-trigger", "promote", "dispatcher", "mlserver", "feedback-intake",
                "flink"} <= set(endpoints)
        report = run_loop(settings, via="stack", trigger_url=endpoints["retrain-trigger"],
                          intake_url=endpoints["feedback-intake"])
        # The demo's bandit step: the old champion back as a challenger under mode: bandit
        # (a policy copy in the state dir), rewarded 1/0 from the truth.
        bandit = run_bandit(settings, challenger=report.champion_before,
                            intake_url=endpoints["feedback-intake"])
        print(report.to_dict(), bandit.to_dict())
        store = open_store(settings.resolved_blob_url, settings)
        registry = Registry(store)
        served = routing.load(store, "digits")
        runs = RunStore(store).runs("digits")
        trained = registry.get("digits", "2")
        archived = read_labeled(store, "digits")
        registry_after = tuple(registry.alias("digits", a) for a in ("champion", "challenger"))

    assert report.phase == "promoted", report.reason
    # The training data are the app's REST predictions joined with its feedback: every
    # prediction before the trigger came back labeled by the join with its kept input, and
    # the run trained on them (the newest 30% held out as its recent evaluation set).
    c = report.counts
    assert report.labels_from == "join"
    assert c["predictions"] == c["feedback"] == c["labeled"] == 300, c
    assert c["labeled_with_input_ref"] == 300, c
    assert c["n_feedback_train"] > 0, c
    assert c["n_feedback_train"] + c["n_recent"] == c["labeled_usable_in_archive"] == 300, c
    assert trained.metrics["n_feedback_train"] == c["n_feedback_train"]
    assert trained.lineage["feedback_skipped"] == {}, trained.lineage
    # Every archived label names a kept input; the truth is the label alone (no pixels).
    assert archived and all(str(r.data.get("input_ref")).startswith("inputs/model=digits/")
                            for r in archived)
    assert all(isinstance(r.data["truth"], int) for r in archived)
    assert report.quality["before"] > 0.9 and report.quality["drifted"] < 0.4
    assert report.quality["after"] > 0.85
    assert report.decision.startswith("drift:"), report.decision  # delivered by the dispatcher
    assert len(runs) == 1 and runs[0].trigger == "drift" and runs[0].status == "succeeded"
    assert registry.alias("digits", "champion") == report.new_version == "2"
    assert set(report.canary_split) == {"1", "2"}
    # Prometheus scraped MLServer: the challenger's requests were counted for the guard.
    assert "error_rate: challenger 0.000%" in report.reason, report.reason
    assert report.timings["trigger_to_serving_s"] < 60

    # Estimated quality beside the realized one: drift-check's estimate of each version
    # from its answers' confidences (v1's calibration fitted by drift-check on its window,
    # v2's by the training run), per window of the loop's traffic.
    est, real = report.estimated, report.realized
    assert set(est["before"]) == set(real["before"]) == {"1"}, (est, real)
    assert set(est["during_canary"]) == set(real["during_canary"]) == {"1", "2"}, (est, real)
    assert set(est["after"]) == set(real["after"]) == {"2"}, (est, real)
    assert all(0.0 <= x <= 1.0 for w in est.values() for x in w.values()), est
    assert abs(est["before"]["1"] - real["before"]["1"]) < 0.15, (est, real)
    assert beside(real["after"], est["after"]).startswith("v2: realized "), (est, real)
    assert ", estimated 0." in beside(real["after"], est["after"])
    checked = {q["version"] for q in report.checked["quality_estimated"]}
    assert "1" in checked, report.checked

    # The bandit moved the traffic towards v2, which earns the rewards on rotated digits,
    # and kept it: the decision names P(best) per version; the stack is left as the loop
    # left it (v2 the champion, serving all traffic, no challenger).
    assert bandit.champion == "2" and bandit.challenger == "1"
    assert bandit.phase == "rolledback", bandit.reason
    assert bandit.reason.startswith("bandit kept the champion: v2 is best with P(best)"), (
        bandit.reason)
    assert "v1: P(best)" in bandit.reason and "mean reward" in bandit.reason
    # Each round waited for the bandit's turn on its rewards: the weights after a round are
    # what they did. v1 started at the canary's 30% and an even prior; its rewards sent it
    # towards the floor (10%) before the decision.
    moved = [r["weights"] for r in bandit.rounds if r["weights"]]
    assert moved and moved[-1]["1"] < 0.2 < moved[-1]["2"], bandit.rounds
    assert not bandit.rounds[-1]["weights"], bandit.rounds  # then all to the champion
    assert bandit.rewards["2"][0] > bandit.rewards["1"][0], bandit.rewards
    assert bandit.champion_after == "2"
    assert registry_after == ("2", None)
    assert served is not None and served.champion == "2" and not dict(served.weights), served
