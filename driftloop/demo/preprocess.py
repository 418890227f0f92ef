"""The demo's preprocess step: raw audio and images through Flink's preprocess job."""

from __future__ import annotations

import time

from driftloop.demo.context import DemoContext
from driftloop.raw_samples import await_preprocessed, describe, publish_samples

__all__ = ["step_preprocess"]

AUDIO = 4
IMAGES = 4
WAIT_S = 180.0


def step_preprocess(ctx: DemoContext) -> None:
    """Raw audio and images flow through Flink's preprocess into model-ready records."""
    if "flink" not in ctx.endpoints:
        ctx.console.print("flink is not part of the stack (run make setup); skipped")
        return
    settings = ctx.kafka_settings
    started = time.monotonic()
    with ctx.console.status("raw inputs → Flink preprocess → driftloop.preprocessed.*"):
        ids = publish_samples(settings, audio=AUDIO, images=IMAGES, source="driftloop/demo")
        ctx.console.out(
            f"sent {AUDIO} audio clips and {IMAGES} images to the raw topics", highlight=False
        )
        missing = await_preprocessed(
            settings,
            ids,
            wait_s=WAIT_S,
            client="demo-preprocess",
            on_record=lambda topic, e: ctx.console.out(describe(topic, e), highlight=False),
        )
    if missing:
        raise RuntimeError(f"{len(missing)} inputs not preprocessed after {WAIT_S:g}s")
    ctx.summary["preprocess"] = {
        "inputs": AUDIO + IMAGES,
        "seconds": round(time.monotonic() - started, 1),
    }
