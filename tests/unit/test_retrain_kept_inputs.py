"""Training on kept inputs: a labeled record's ``input_ref`` under ``inputs/`` trains (media
and tensors alike); a missing or expired input is counted and named; a run with no usable
feedback is ``skipped`` with the reason and counts instead of registering a version."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from driftloop.blob import open_store
from driftloop.inputlog import encode_tensor, input_digest, input_key
from driftloop.policy import parse_policy
from driftloop.registry import Registry
from driftloop.retrain.job import run_job
from driftloop.retrain.pipeline import TrainingSkipped, train_model
from driftloop.retrain.state import RunStore, now_utc
from driftloop.serving.models import digits
from driftloop.settings import Settings
from tests.unit.test_retrain_rows import png_of


def labeled(i: int, **data: object) -> str:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": f"fb-{i}",
            "source": "join",
            "type": "io.driftloop.labeled.v1",
            "data": {
                "model": "digits",
                "prediction_id": f"p{i}",
                "feedback_id": f"fb-{i}",
                "feedback_source": "app",
                "feedback_time": f"2026-11-28T10:00:{i:02d}Z",
                **data,
            },
        }
    )


def setup(tmp_path: Path) -> tuple[Settings, object]:
    settings = Settings(state_dir=tmp_path, policy_dir=tmp_path / "policies")
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "digits.yaml").write_text(
        "model: digits\ninputs:\n  retention_days: 7\n"
    )
    return settings, open_store(settings.resolved_blob_url, settings)


def test_kept_media_and_tensors_train_and_missing_or_expired_are_named(tmp_path: Path) -> None:
    settings, store = setup(tmp_path)
    ds = digits.load_dataset()
    now = now_utc()
    keys = []
    for i in range(6):
        if i % 2:
            tensor = ds.X[i].astype(np.float32).reshape(1, 64)
            key = input_key("digits", now, input_digest(None, tensor)[0], "npy")
            store.put(key, encode_tensor(tensor))
        else:
            png = png_of(ds.X[i])
            key = input_key("digits", now, input_digest(png, None)[0], "png")
            store.put(key, png)
        keys.append(key)
    missing = input_key("digits", now, "a" * 64, "npy")
    expired = input_key("digits", now - timedelta(days=8), "b" * 64, "npy")
    batch = np.stack([ds.X[0], ds.X[1]]).astype(np.float32)
    batch_key = input_key("digits", now, input_digest(None, batch)[0], "npy")
    store.put(batch_key, encode_tensor(batch))
    lines = [labeled(i, truth=int(ds.y[i]), input_ref=k) for i, k in enumerate(keys)]
    lines += [
        labeled(10, truth=1, input_ref=missing),
        labeled(11, truth=2, input_ref=expired),
        labeled(12, truth=3, input_ref=batch_key),
        labeled(13, truth=4),
    ]
    store.put("labeled/model=digits/date=2026-11-28/a.jsonl", "\n".join(lines).encode())
    policy = parse_policy({"model": "digits", "inputs": {"retention_days": 7}})

    result = train_model(settings, policy, run_id="r1", store=store, emit=False)

    m = result.metrics
    assert m["n_feedback_train"] + m["n_recent"] == 6
    assert m["n_skipped"] == 4
    assert m["n_skipped_input_missing"] == 1
    assert m["n_skipped_input_expired"] == 1
    assert m["n_skipped_bad_features"] == 1
    assert m["n_skipped_no_input"] == 1
    assert result.lineage["feedback_skipped_inputs"] == {
        "input_missing": [missing],
        "input_expired": [expired],
    }


def test_a_run_with_no_usable_feedback_is_skipped_with_reason_and_counts(tmp_path: Path) -> None:
    settings, store = setup(tmp_path)
    registry = Registry(store)
    registry.register("digits", {"model.json": b"{}"})
    store.put(
        "labeled/model=digits/date=2026-11-28/a.jsonl",
        "\n".join(
            [
                labeled(1, truth=3, input_ref=None),
                labeled(2, truth=4, input_ref="inputs/model=digits/x"),
            ]
        ).encode(),
    )
    policy = parse_policy({"model": "digits"})
    with pytest.raises(TrainingSkipped) as e:
        train_model(settings, policy, run_id="r0", store=store, emit=False)
    assert e.value.metrics["n_feedback_records"] == 2
    assert e.value.metrics["n_feedback_usable"] == 0
    assert e.value.metrics["n_skipped_no_input"] == 1
    assert e.value.metrics["n_skipped_input_missing"] == 1
    assert "0 usable feedback rows of 2 labeled records" in e.value.reason

    # the job records it: skipped, nothing registered, exit code 0
    assert run_job(settings, "digits", "r2", {}) == 0
    run = RunStore(store).get("digits", "r2")
    assert run.status == "skipped" and run.version is None
    assert run.skip_reason is not None and "no_input 1" in run.skip_reason
    assert run.metrics["n_feedback_usable"] == 0
    assert run.skipped_inputs == {"input_missing": ["inputs/model=digits/x"]}
    assert registry.versions("digits") == ["1"]

    # params asked for by hand: an experiment on the base data alone still trains
    result = train_model(settings, policy, run_id="r3", params={"C": 2.0}, store=store, emit=False)
    assert result.metrics["n_feedback_train"] == 0
    # and min_feedback_rows 0 trains on the base data as before
    base = parse_policy({"model": "digits", "training": {"min_feedback_rows": 0}})
    assert train_model(settings, base, run_id="r4", store=store, emit=False).version
