"""The kept-inputs retention job on the real S3 server, as the hourly PingSource tick runs it
in retrain-trigger and as ``driftloop expire-inputs`` runs it by hand."""

from __future__ import annotations

import json
from datetime import timedelta

from typer.testing import CliRunner

from driftloop import events as ev
from driftloop.inputlog import input_digest, input_key
from driftloop.retrain.state import now_utc
from driftloop.serving.server import settings_env
from tests.fixtures.loop import function_client, post_event, write_policy


def put_inputs(store, names_hours_ago: dict[str, float]) -> dict[str, str]:
    now = now_utc()
    keys = {}
    for name, hours in names_hours_ago.items():
        key = input_key(
            "digits", now - timedelta(hours=hours), input_digest(name.encode(), None)[0], "bin"
        )
        store.put(key, name.encode())
        keys[name] = key
    return keys


def test_the_retention_tick_and_the_command_delete_what_the_policy_expires(loop_env):
    write_policy(
        loop_env.settings.policy_dir,
        inputs={"retention_days": 7, "only_with_feedback": True, "feedback_window_hours": 24},
    )
    keys = put_inputs(loop_env.store, {"old": 24 * 8, "unlabeled": 30, "labeled": 30, "fresh": 1})
    # Claim checks (by-reference media, Flink's preprocessed payloads): gone 7 days (the
    # default) after their day; another model's are not this model's to expire.
    today = now_utc().date()
    checks = {
        "raw-old": f"raw/model=digits/date={today - timedelta(days=9)}/image/{'a' * 64}",
        "pre-old": f"preprocessed/model=digits/date={today - timedelta(days=8)}/image/b.png",
        "raw-fresh": f"raw/model=digits/date={today - timedelta(days=6)}/image/{'c' * 64}",
        "other-model": f"raw/model=faces/date={today - timedelta(days=30)}/image/{'d' * 64}",
    }
    for key in checks.values():
        loop_env.store.put(key, b"x")
    loop_env.store.put(
        "labeled/model=digits/date=2026-12-01/part-0.jsonl",
        json.dumps(
            {
                "specversion": "1.0",
                "id": "l1",
                "source": "join",
                "type": ev.LABELED,
                "data": {
                    "model": "digits",
                    "prediction_id": "p1",
                    "feedback_id": "f1",
                    "feedback_source": "app",
                    "truth": 3,
                    "input_ref": keys["labeled"],
                },
            },
        ).encode(),
    )

    client = function_client("retrain-trigger", "retrain_trigger", loop_env.trigger())
    tick = ev.new_event(
        ev.PING,
        "/apis/v1/namespaces/driftloop/pingsources/inputs-retention",
        {"reason": "schedule", "task": "inputs-retention"},
        datacontenttype=ev.JSON,
    )
    r = post_event(client, tick)
    assert r.status_code == 200, r.text
    [report] = r.json()["results"]
    assert report == {
        "model": "digits",
        "deleted_expired": 1,
        "deleted_unlabeled": 1,
        "deleted_claim_checks": 2,
        "kept": 2,
        "errors": [],
    }
    left = set(loop_env.store.list("inputs/model=digits/"))
    assert left == {keys["labeled"], keys["fresh"]}
    left = set(loop_env.store.list("raw/")) | set(loop_env.store.list("preprocessed/"))
    assert {checks["raw-fresh"], checks["other-model"]} <= left
    assert not {checks["raw-old"], checks["pre-old"]} & left

    # the command, with a shorter retention now: the labeled one goes too
    write_policy(loop_env.settings.policy_dir, inputs={"retention_days": 1})
    from driftloop.cli import app

    env = {
        **settings_env(loop_env.settings),
        "DRIFTLOOP_POLICY_DIR": str(loop_env.settings.policy_dir),
    }
    out = CliRunner().invoke(app, ["expire-inputs", "--model", "digits"], env=env)
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)[0]["deleted_expired"] == 1
    assert set(loop_env.store.list("inputs/model=digits/")) == {keys["fresh"]}
    bad = CliRunner().invoke(app, ["expire-inputs", "--model", "../x"], env=env)
    assert bad.exit_code != 0
