"""retrain-trigger and promote in-process (functions-framework's app, WSGI test client),
on the real Kafka broker and S3 server; training runs as real subprocesses."""

from __future__ import annotations

import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor

from typer.testing import CliRunner

from driftloop import events as ev
from driftloop import topics
from driftloop.http import Request
from driftloop.retrain.pipeline import train_model
from driftloop.serving.server import settings_env
from tests.fixtures.loop import drift_event, function_client, post_event, wait_run


def control_events(kafka, type_, model_version=None, run_id=None):
    out = []
    for e in kafka.read_events(topics.EVENTS):
        if e.type != type_:
            continue
        data = e.data if isinstance(e.data, dict) else {}
        if run_id is not None and data.get("run_id") != run_id:
            continue
        out.append(e)
    return out


def test_fifty_drift_events_within_cooldown_start_one_run(loop_env, kafka):
    service = loop_env.trigger()
    client = function_client("retrain-trigger", "retrain_trigger", service)
    first = post_event(client, drift_event())
    assert first.status_code == 202, first.text
    body = first.json()
    run_id = body["run_id"]
    assert body["decision"]["retrain"] is True
    fired = [r for r in body["decision"]["rules"] if r["fired"]]
    assert [(r["rule"], r["value"]) for r in fired] == [("drift", 0.75)]

    def send(i: int) -> tuple[int, dict]:
        headers, raw = ev.to_http_binary(drift_event(source=f"drift-{i % 3}"))
        r = service.handle(Request.post(headers, raw))
        return r.status, json.loads(r.body)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, range(49)))
    assert all(status == 200 for status, _ in results)
    blocked = {b["decision"]["blocked_by"] for _, b in results}
    assert blocked <= {"cooldown", "concurrency"}, blocked
    assert all(b["run_id"] is None for _, b in results)
    assert "but cooldown" in results[-1][1]["decision"]["explain"] or \
        "but concurrency" in results[-1][1]["decision"]["explain"]

    run = wait_run(loop_env.runs, "digits", run_id)
    assert run.status == "succeeded", run.error
    assert [r.run_id for r in loop_env.runs.runs("digits")] == [run_id]
    assert loop_env.registry.versions("digits") == ["1", "2"]
    mv = loop_env.registry.get("digits", "2")
    assert mv.parent == "1" and mv.lineage["run_id"] == run_id
    assert mv.lineage["reasons"][0]["rule"] == "drift"
    assert loop_env.store.exists("models/digits/2/reference_profile.json")
    requested = control_events(kafka, ev.RETRAIN_REQUESTED, run_id=run_id)
    assert len(requested) == 1 and requested[0].data["reasons"][0]["rule"] == "drift"
    trained = control_events(kafka, ev.MODEL_TRAINED, run_id=run_id)
    assert len(trained) == 1 and trained[0].data["version"] == "2"
    service.close()

    # A restarted function reads the same run state: still within the cooldown.
    restarted = function_client("retrain-trigger", "retrain_trigger", loop_env.trigger())
    after = post_event(restarted, drift_event()).json()
    assert after["run_id"] is None and after["decision"]["blocked_by"] == "cooldown"


def test_redelivered_event_is_a_duplicate(loop_env):
    service = loop_env.trigger()
    client = function_client("retrain-trigger", "retrain_trigger", service)
    e = drift_event()
    run_id = post_event(client, e).json()["run_id"]
    wait_run(loop_env.runs, "digits", run_id)
    # Make the cooldown pass: the same event must still not start a run.
    run = loop_env.runs.get("digits", run_id)
    loop_env.runs.put(type(run)(**{**run.to_dict(), "reasons": tuple(run.reasons),
                                   "requested_at": "2020-01-01T00:00:00Z"}))
    again = post_event(client, e).json()
    assert again["run_id"] is None and again["decision"]["blocked_by"] == "duplicate"
    service.close()


def test_crashed_training_is_reported_and_the_next_trigger_works(loop_env, kafka):
    service = loop_env.trigger()
    client = function_client("retrain-trigger", "retrain_trigger", service)
    r = client.post("/", json={"model": "digits", "params": {"kind": "nonsense"}})
    assert r.status_code == 202, r.text
    failed = wait_run(loop_env.runs, "digits", r.json()["run_id"])
    assert failed.status == "failed" and failed.exit_code == 1
    assert "params.kind 'nonsense'" in failed.error
    listed = client.get("/runs/digits").json()
    assert listed[-1]["status"] == "failed" and "nonsense" in listed[-1]["error"]

    # A training process killed mid-run is reported by the watcher, with its exit code.
    r = client.post("/", json={"model": "digits"})
    assert r.status_code == 202
    pid = int(r.json()["handle"].split()[0].removeprefix("pid:"))
    os.kill(pid, signal.SIGKILL)
    killed = wait_run(loop_env.runs, "digits", r.json()["run_id"])
    assert killed.status == "failed" and killed.exit_code == -9
    assert "without a result" in killed.error
    assert loop_env.registry.versions("digits") == ["1"]  # nothing registered...
    assert loop_env.registry.alias("digits", "champion") == "1"  # ...nor promoted

    # Failed runs hold no slot but start the cooldown, longer after failures in a row:
    # a trigger that keeps coming back cannot start one failing run after another.
    nxt = post_event(client, drift_event())
    assert nxt.status_code == 200, nxt.text
    held = nxt.json()["decision"]
    assert held["blocked_by"] == "cooldown" and "after 2 failed run(s)" in held["detail"]
    assert len(loop_env.runs.runs("digits")) == 2
    # Ops can still start a run by hand.
    r = client.post("/", json={"model": "digits"})
    assert r.status_code == 202, r.text
    ok = wait_run(loop_env.runs, "digits", r.json()["run_id"])
    assert ok.status == "succeeded" and ok.version == "2"
    service.close()


def test_alertmanager_webhook_schedule_and_bad_input(loop_env):
    service = loop_env.trigger()
    client = function_client("retrain-trigger", "retrain_trigger", service)
    assert client.get("/healthz").status_code == 200
    assert client.put("/").status_code == 405
    r = client.post("/", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["fields"][0]["field"] == "body"
    r = client.post("/", json={"model": "../etc"})
    assert r.status_code == 400 and r.json()["fields"][0]["field"] == "model"
    r = client.post("/", json={"model": "digits", "feedback_count": -1})
    assert r.status_code == 400 and r.json()["fields"][0] == {
        "field": "feedback_count", "rule": "unknown-field",
        "message": "a manual retrain request takes only model, params"}
    r = post_event(client, ev.new_event(ev.MODEL_PROMOTED, "x", {"model": "digits",
                                                                  "version": "1"}))
    assert r.status_code == 400 and "does not trigger" in r.json()["message"]
    r = post_event(client, ev.new_event(ev.DRIFT_DETECTED, "x", {"version": "1"}))
    assert r.status_code == 400 and r.json()["fields"][0]["field"] == "data.model"
    r = client.post("/", json={"model": "ocr"})
    assert r.status_code == 404 and "no policy" in r.json()["message"]

    # A schedule tick with no schedule rule in the policy: evaluated, nothing fires.
    tick = ev.new_event(ev.PING, "/apis/v1/namespaces/driftloop/pingsources/retrain-schedule",
                        {"reason": "schedule", "task": "retrain"}, datacontenttype=ev.JSON)
    r = post_event(client, tick)
    assert r.status_code == 200
    assert r.json()["results"][0]["decision"]["retrain"] is False

    # Raw feedback is not counted (it may repeat, be reward-only or match nothing); a
    # labeled record below the volume threshold is counted.
    fb = ev.new_event(ev.FEEDBACK, "app", {"prediction_id": "p1", "model": "digits",
                                           "truth": 3}, datacontenttype=ev.JSON)
    r = post_event(client, fb)
    assert r.status_code == 200 and r.json()["counted"] is False
    lab = ev.new_event(ev.LABELED, "driftloop/flink/join", {
        "model": "digits", "prediction_id": "p1", "feedback_id": fb.id,
        "feedback_source": "app", "truth": 3}, datacontenttype=ev.JSON)
    r = post_event(client, lab)
    assert r.status_code == 200 and r.json()["feedback_since_training"] == 1

    # Malformed Alertmanager webhooks: 400, every broken field and its rule at once.
    for body, expected in [
        ({"alerts": [{"labels": "x"}]}, [("alerts[0].labels", "object")]),
        ({"alerts": "x"}, [("alerts", "array")]),
        ({"alerts": [1, {"status": "burning"}]},
         [("alerts[0]", "object"), ("alerts[1].status", "enum")]),
        ({"alerts": [{"labels": {"model": "../x", "n": 1}, "startsAt": 5}]},
         [("alerts[0].labels.n", "string"), ("alerts[0].startsAt", "string"),
          ("alerts[0].labels.model", "safe-name")]),
    ]:
        r = client.post("/", json=body)
        assert r.status_code == 400, (body, r.text)
        assert [(f["field"], f["rule"]) for f in r.json()["fields"]] == expected
    assert loop_env.runs.runs("digits") == []
    # A firing alert about no model (a scrape target down, say) is listed as ignored.
    r = client.post("/", json={"alerts": [{"status": "firing",
                                           "labels": {"alertname": "TargetDown"}}]})
    assert r.status_code == 200 and r.json()["results"] == []
    assert r.json()["ignored"] == [{"alert": 0, "alertname": "TargetDown",
                                    "reason": "no model label"}]

    alert = {"version": "4", "status": "firing", "receiver": "retrain-trigger", "alerts": [
        {"status": "firing", "fingerprint": "abc", "startsAt": "2026-11-28T10:00:00Z",
         "labels": {"alertname": "DriftloopQualityLow", "trigger": "quality",
                    "model": "digits", "version": "1", "metric": "accuracy"}},
        {"status": "resolved", "labels": {"alertname": "DriftloopDriftDetected",
                                          "trigger": "drift", "model": "digits"}},
    ]}
    r = client.post("/", json=alert)
    assert r.status_code == 200
    result = r.json()["results"][0]
    assert result["decision"]["retrain"] is True and result["run_id"]
    fired = [x for x in result["decision"]["rules"] if x["fired"]]
    assert [x["rule"] for x in fired] == ["quality"]
    assert wait_run(loop_env.runs, "digits", result["run_id"]).status == "succeeded"
    service.close()


def test_worse_candidate_is_rejected_by_the_offline_gate(loop_env, kafka):
    from driftloop.policy import load_policy

    policy = load_policy(loop_env.settings.policy_dir, "digits")
    bad = train_model(loop_env.settings, policy, run_id="bad-run", params={"C": 0.01},
                      store=loop_env.store, emit=False)
    promoter = loop_env.promoter()
    client = function_client("promote", "promote", promoter)
    trained = ev.new_event(ev.MODEL_TRAINED, "driftloop/retrain",
                           {"model": "digits", "version": bad.version, "parent_version": "1",
                            "metrics": dict(bad.metrics)}, datacontenttype=ev.JSON)
    r = post_event(client, trained)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["phase"] == "rejected" and body["gate"]["passed"] is False
    assert body["gate"]["challenger_holdout"] < 0.5 < body["gate"]["champion_holdout"]
    assert loop_env.registry.alias("digits", "champion") == "1"
    assert loop_env.registry.alias("digits", "challenger") is None
    rolled = [e for e in kafka.read_events(topics.EVENTS) if e.type == ev.MODEL_ROLLEDBACK
              and e.data.get("version") == bad.version and e.data.get("stage") == "gate"]
    assert rolled and rolled[-1].data["restored_version"] == "1"
    # Redelivery of the same model.trained is reported, not redone.
    assert post_event(client, trained).json()["duplicate"] is True
    assert post_event(client, ev.new_event(ev.DRIFT_DETECTED, "x", {"model": "digits"})
                      ).status_code == 400
    promoter.close()


def test_promote_and_rollback_by_hand(loop_env, kafka):
    from driftloop.cli import app
    from driftloop.policy import load_policy

    policy = load_policy(loop_env.settings.policy_dir, "digits")
    v2 = train_model(loop_env.settings, policy, run_id="hand-run", store=loop_env.store,
                     emit=False)
    env = {**settings_env(loop_env.settings),
           "DRIFTLOOP_POLICY_DIR": str(loop_env.settings.policy_dir)}
    runner = CliRunner()
    r = runner.invoke(app, ["promote", "--model", "digits", "--version", v2.version], env=env)
    assert r.exit_code == 0, r.output
    assert loop_env.registry.alias("digits", "champion") == v2.version
    r = runner.invoke(app, ["rollback", "--model", "digits"], env=env)
    assert r.exit_code == 0, r.output
    assert loop_env.registry.alias("digits", "champion") == "1"
    reasons = [c.reason for c in loop_env.registry.history("digits", "champion")]
    assert reasons[-2:] == ["promoted by hand", f"rolled back by hand (undoes v{v2.version})"]
    # v1 replaced no champion: a second rollback refuses instead of going back to v2.
    r = runner.invoke(app, ["rollback", "--model", "digits"], env=env)
    assert r.exit_code == 1 and "replaced no earlier champion" in r.output
    assert loop_env.registry.alias("digits", "champion") == "1"
    r = runner.invoke(app, ["rollback", "--model", "digits", "--version", v2.version], env=env)
    assert r.exit_code == 1 and "neither in canary nor the champion" in r.output
    r = runner.invoke(app, ["promote", "--model", "digits", "--version", "99"], env=env)
    assert r.exit_code == 1 and "no version '99'" in r.output
    types = [e.type for e in kafka.read_events(topics.EVENTS)
             if isinstance(e.data, dict) and e.data.get("version") == v2.version]
    assert ev.MODEL_PROMOTED in types and ev.MODEL_ROLLEDBACK in types


def test_bake_interrupted_by_a_restart_resumes_and_rolls_back_without_evidence(loop_env, kafka):
    """The promote function died mid-bake; the next process resumes it from the blob store.
    No labeled challenger traffic arrived, so the guard cannot vouch for it: rollback."""
    import time as _time

    from driftloop.policy import load_policy
    from driftloop.promotion.service import Promotion
    from driftloop.retrain.state import iso, now_utc

    policy = load_policy(loop_env.settings.policy_dir, "digits")
    v2 = train_model(loop_env.settings, policy, run_id="resume-run", store=loop_env.store,
                     emit=False)
    first = loop_env.promoter()
    first.ledger.acquire("digits", v2.version, "promotion")  # what start() holds through the bake
    first.steps.start_canary(policy, "digits", v2.version, "1")
    first.ledger.save(Promotion("digits", v2.version, "1", "canary", iso(now_utc()),
                         canary_started_ms=int((_time.time() - 60) * 1000)))
    first.close()  # the process is gone; its state is not

    restarted = loop_env.promoter()
    assert restarted.resume() == [("digits", v2.version)]
    final = restarted.wait("digits", v2.version, timeout_s=60)
    assert final is not None and final.phase == "rolledback"
    assert "needs 15" in final.reason
    assert loop_env.registry.alias("digits", "champion") == "1"
    assert loop_env.registry.alias("digits", "challenger") is None
    assert final.reason.startswith("no evidence:") and restarted.lease("digits") is None
    from driftloop.promotion.routing import load

    assert load(loop_env.store, "digits").weights == {}  # all traffic back on the champion
    restarted.close()
