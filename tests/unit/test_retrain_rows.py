"""Training on labeled records a client could have poisoned: inputs are read only from the
model's own preprocessed inputs, and a record that cannot train is skipped and counted."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from driftloop.blob import open_store
from driftloop.policy import parse_policy
from driftloop.registry import Registry
from driftloop.retrain.pipeline import train_model
from driftloop.serving.models import digits
from driftloop.settings import Settings

INPUTS = "preprocessed/model=digits/date=2026-11-28/image"


def png_of(pixels: np.ndarray) -> bytes:
    arr = (pixels.reshape(8, 8) / 16.0 * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).resize((32, 32), Image.Resampling.NEAREST).save(buf, "PNG")
    return buf.getvalue()


def labeled(i: int, **data: object) -> str:
    return json.dumps({"specversion": "1.0", "id": f"fb-{i}", "source": "join",
                       "type": "io.driftloop.labeled.v1",
                       "data": {"model": "digits", "prediction_id": f"p{i}",
                                "feedback_id": f"fb-{i}", "feedback_source": "app",
                                "feedback_time": f"2026-11-28T10:00:{i:02d}Z", **data}})


def test_unreadable_or_foreign_inputs_are_skipped_and_counted(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    store = open_store(settings.resolved_blob_url, settings)
    registry = Registry(store)
    v1 = registry.register("digits", {"model.json": b"{}"})  # what a poisoned ref points at
    ds = digits.load_dataset()
    store.put(f"{INPUTS}/good.png", png_of(ds.X[0]))
    store.put(f"{INPUTS}/garbage.png", b"not a png at all")
    lines = [
        labeled(1, truth=int(ds.y[0]), input_ref=f"{INPUTS}/good.png"),
        labeled(2, truth=3, input_ref=f"models/digits/{v1.version}/manifest.json"),
        labeled(3, truth=3, input_ref="../../etc/passwd"),
        labeled(4, truth=3, input_ref=f"{INPUTS}/missing.png"),
        labeled(5, truth=3, input_ref=f"{INPUTS}/garbage.png"),
        labeled(6, truth="hello", features=ds.X[1].tolist()),
        labeled(7, truth=int(ds.y[2]), features=ds.X[2].tolist()),
    ]
    store.put("labeled/model=digits/date=2026-11-28/a.jsonl", "\n".join(lines).encode())
    policy = parse_policy({"model": "digits", "training": {"params": {}}})

    result = train_model(settings, policy, run_id="r1", store=store, emit=False)

    m = result.metrics
    assert m["n_feedback_train"] == 2  # the good image and the pixel row
    assert m["n_skipped"] == 5
    assert m["n_skipped_input_outside_inputs"] == 2
    assert m["n_skipped_input_missing"] == 1
    assert m["n_skipped_input_unreadable"] == 1
    assert m["n_skipped_no_label"] == 1
    assert result.lineage["feedback_skipped"] == {
        "input_missing": 1, "input_outside_inputs": 2, "input_unreadable": 1, "no_label": 1}
    assert registry.versions("digits") == [v1.version, result.version]
