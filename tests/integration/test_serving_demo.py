"""The demo's serving step against the session's MLServer."""

from __future__ import annotations

import pytest
from rich.console import Console

from driftloop.demo.context import DemoContext
from driftloop.demo.predictions import step_predictions

pytestmark = pytest.mark.integration


def test_demo_step_predicts_each_family_with_ids(mlserver, intake_server):
    console = Console(record=True, width=200)
    ctx = DemoContext(mlserver.settings, console, {"mlserver": mlserver.url,
                                                   "feedback-intake": intake_server.url})
    step_predictions(ctx)
    rows = {r["model"]: r for r in ctx.summary["predictions"]}
    assert set(rows) == {"speech", "ocr", "faces", "objects", "digits"}
    assert rows["ocr"]["quality"] == 0.0  # CER of a clean rendered line
    assert rows["digits"]["quality"] == 1.0
    assert rows["faces"]["quality"] > 0.6
    assert rows["objects"]["quality"] == 1.0  # mAP@0.5 of the cat photo
    assert rows["speech"]["quality"] <= 0.5
    text = console.export_text()
    assert all(r["id"] in text for r in rows.values())
    assert {r["feedback_status"] for r in rows.values()} == {"202"}  # via driftloop.client
