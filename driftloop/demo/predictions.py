"""The demo's predictions step: one prediction per model family, then feedback against each id.

Inputs with known truth are made on the spot (flite speech, Pillow text, scikit-image's
astronaut photo, a scikit-learn digit), so the feedback carries the real truth and the
join downstream can score each prediction.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from rich.table import Table

from driftloop import quality
from driftloop.demo.context import DemoContext

__all__ = ["samples", "step_predictions"]

SENTENCE = "please call me tomorrow morning"
LINE = "Invoice 2041 due on March 15"
ASTRONAUT_FACE = [178, 72, 272, 167]


def _png(img: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def samples() -> list[tuple[str, bytes, Any]]:
    """(model, input bytes, truth) for each family whose input can be made here."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont
    from sklearn.datasets import load_digits

    out: list[tuple[str, bytes, Any]] = []
    if shutil.which("flite"):
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "s.wav"
            subprocess.run(
                ["flite", "-voice", "slt", "-t", SENTENCE, "-o", str(wav)],
                check=True,
                capture_output=True,
                timeout=60,
            )
            out.append(("speech", wav.read_bytes(), {"text": SENTENCE}))
    font = ImageFont.load_default(size=36)
    line = Image.new("L", (640, 80), 255)
    ImageDraw.Draw(line).text((20, 20), LINE, font=font, fill=0)
    out.append(("ocr", _png(line), {"text": LINE}))
    try:
        from skimage import data

        out.append(("faces", _png(Image.fromarray(data.astronaut())), {"boxes": [ASTRONAUT_FACE]}))
    except ImportError:
        pass
    d = load_digits()
    digit = Image.fromarray((255 - d.data[7].reshape(8, 8) / 16 * 255).astype(np.uint8))
    out.append(("digits", _png(digit.resize((64, 64))), {"label": int(d.target[7])}))
    return out


def _summary(output: dict[str, Any]) -> str:
    if "text" in output:
        return repr(output["text"])
    if "label" in output:
        return f"label {output['label']} ({output.get('confidence', 0):.2f})"
    return f"{len(output.get('boxes', []))} box(es) {output.get('boxes', [])[:1]}"


def step_predictions(ctx: DemoContext) -> None:
    """Each model family answers over V2 with a prediction id; feedback is posted against it."""
    from driftloop.client import Client
    from driftloop.errors import DriftloopError

    server = ctx.endpoints.get("mlserver")
    if server is None:
        ctx.console.print("mlserver is not part of the stack (run make setup); skipped")
        return
    intake = ctx.endpoints.get("feedback-intake")
    table = Table("model", "prediction id", "version", "output", "quality", "feedback")
    results = []
    # The app's side goes through driftloop.client, as an app would.
    with Client(
        source="driftloop/demo",
        serving_url=server,
        intake_url=intake,
        timeout_s=ctx.settings.serving_timeout_s,
    ) as client:
        for model, data, truth in samples():
            pred = client.predict(model, data)
            score = quality.score(model, dict(pred.output), truth)
            status = "-"
            if intake:
                try:
                    client.feedback(pred, truth=truth)
                    status = "202"
                except DriftloopError as e:
                    status = f"{e.status} {e.reason}"
            table.add_row(
                model,
                pred.id,
                str(pred.version),
                _summary(dict(pred.output)),
                f"{quality.spec(model).metric} {score:.3f}",
                status,
            )
            results.append(
                {
                    "model": model,
                    "id": pred.id,
                    "version": pred.version,
                    "quality": score,
                    "feedback_status": status,
                }
            )
    ctx.console.print(table)
    ctx.summary["predictions"] = results
