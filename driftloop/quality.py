"""Per-record quality metrics, and each model's score under the metric its
``driftloop.catalogue`` entry declares.

Shared by Flink's join (quality of each labeled record), drift-check (quality by
model and version) and the trainers (holdout evaluation). ``MODELS``, ``ModelSpec`` and
``spec`` are the catalogue's ``FAMILIES``, ``Family`` and ``family`` under the names
their readers already use; families are declared in the catalogue only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from driftloop.catalogue import FAMILIES, Family, family

Box = Sequence[float]


def edit_distance(ref: Sequence[Any], hyp: Sequence[Any]) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    if len(ref) < len(hyp):
        ref, hyp = hyp, ref
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


_WORD = re.compile(r"[a-z0-9']+")


def normalize_words(text: str) -> list[str]:
    """Lowercase words without punctuation: how transcripts are compared."""
    return _WORD.findall(text.lower())


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word edits over reference words (0 is perfect; can exceed 1)."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(ref, hyp) / len(ref)


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate over whitespace-normalised text (0 is perfect)."""
    ref, hyp = " ".join(reference.split()), " ".join(hypothesis.split())
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(ref, hyp) / len(ref)


def accuracy(truth: Any, predicted: Any) -> float:
    """1.0 when the label matches (compared as strings), else 0.0."""
    return 1.0 if str(truth) == str(predicted) else 0.0


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``[x1, y1, x2, y2]`` boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def mean_iou(predicted: Sequence[Box], truth: Sequence[Box]) -> float:
    """Mean over true boxes of the best IoU any predicted box reaches (greedy, one-to-one).

    Missed objects count 0; with no true boxes the answer is 1 when nothing was
    predicted and 0 otherwise.
    """
    if not truth:
        return 1.0 if not predicted else 0.0
    remaining = list(predicted)
    total = 0.0
    for t in truth:
        if not remaining:
            break
        best = max(range(len(remaining)), key=lambda i: iou(remaining[i], t))
        total += iou(remaining.pop(best), t)
    return total / len(truth)


METRICS = ("accuracy", "wer", "cer", "iou")

ModelSpec = Family
"""A model family's declaration: ``driftloop.catalogue.Family`` (the name readers knew)."""

MODELS: dict[str, Family] = FAMILIES
"""The model catalogue, ``driftloop.catalogue.FAMILIES``: declared there, read here."""


def prediction_features(model: str, output: Mapping[str, Any]) -> dict[str, float]:
    """The ``output_features`` of one prediction, as numbers (missing ones left out).

    ``box_area_kpx`` is the summed area of the boxes in thousands of pixels.
    """
    values: dict[str, float] = {}
    text = output.get("text")
    if isinstance(text, str):
        values["n_words"] = float(len(text.split()))
        values["n_chars"] = float(len(text))
    for key in ("confidence", "label"):
        if isinstance(output.get(key), int | float) and not isinstance(output.get(key), bool):
            values[key] = float(output[key])
    boxes = output.get("boxes")
    if isinstance(boxes, list) and "text" not in output:
        values["n_boxes"] = float(len(boxes))
        scores = output.get("scores") or []
        values["max_score"] = float(max(scores)) if scores else 0.0
        values["box_area_kpx"] = sum(
            max(0.0, (b[2] - b[0])) * max(0.0, (b[3] - b[1])) for b in boxes) / 1e3
    wanted = spec(model).output_features
    return {k: v for k, v in values.items() if k in wanted}


def spec(model: str) -> Family:
    """The catalogue entry of ``model``; ``KeyError`` naming the known models otherwise."""
    return family(model)


def score_metric(metric: str, output: Mapping[str, Any], truth: Any) -> float:
    """One record's quality under ``metric`` from a model output and the feedback truth."""
    if metric == "wer":
        return wer(_text(truth), _text(output))
    if metric == "cer":
        return cer(_text(truth), _text(output))
    if metric == "accuracy":
        predicted = (
            output.get("label", output.get("text")) if isinstance(output, Mapping) else output
        )
        t = truth.get("label") if isinstance(truth, Mapping) else truth
        return accuracy(t, predicted)
    if metric == "iou":
        pred_boxes = output.get("boxes", []) if isinstance(output, Mapping) else []
        true_boxes = truth.get("boxes", []) if isinstance(truth, Mapping) else truth
        return mean_iou([list(map(float, b)) for b in pred_boxes],
                        [list(map(float, b)) for b in true_boxes or []])
    raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")


def score(model: str, output: Mapping[str, Any], truth: Any) -> float:
    """Quality of one prediction of ``model`` given its truth (the model's declared metric)."""
    value = score_metric(spec(model).metric, output, truth)
    if not math.isfinite(value):
        raise ValueError(f"quality of {model} is not finite")
    return value


def _text(value: Any) -> str:
    if isinstance(value, Mapping):
        value = value.get("text", value.get("transcript", ""))
    return "" if value is None else str(value)
