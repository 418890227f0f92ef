"""The demo's predictions step: one prediction per model family, then feedback against each id.

Each catalogue family's model class makes an input with known truth on the spot (flite
speech, Pillow text, scikit-image's astronaut and cat photos, a scikit-learn digit), so the
feedback carries the real truth and the join downstream can score each prediction.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from driftloop import quality
from driftloop.catalogue import FAMILIES, Sample
from driftloop.demo.context import DemoContext

__all__ = ["samples", "step_predictions"]


def samples() -> list[tuple[str, Sample]]:
    """(model, sample) for each family whose input can be made on this machine."""
    out: list[tuple[str, Sample]] = []
    for name, entry in FAMILIES.items():
        sample = entry.model_class().sample()
        if sample is not None:
            out.append((name, sample))
    return out


def _summary(output: dict[str, Any]) -> str:
    if "text" in output:
        return repr(output["text"])
    if "label" in output:
        return f"label {output['label']} ({output.get('confidence', 0):.2f})"
    boxes, labels, scores = (output.get(k) or [] for k in ("boxes", "labels", "scores"))
    top = list(zip(boxes, labels, scores, strict=False))[:2]  # faces' scores may be absent
    found = ", ".join(f"{lb} {sc:.2f} {bx}" for bx, lb, sc in top)
    return f"{len(boxes)} box(es) {found or boxes[:1]}"


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
        for model, sample in samples():
            data, truth = sample.data, sample.truth
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
                f"{FAMILIES[model].metric} {score:.3f}",
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
