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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from driftloop.catalogue import FAMILIES, Family, family

__all__ = [
    "METRICS",
    "MODELS",
    "NO_OBJECT",
    "Box",
    "DetectionAP",
    "ModelSpec",
    "accuracy",
    "average_precision",
    "cer",
    "detection_ap",
    "detection_hits",
    "edit_distance",
    "iou",
    "mean_average_precision",
    "mean_iou",
    "normalize_words",
    "prediction_features",
    "score",
    "score_metric",
    "spec",
    "wer",
]

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


IOU_MATCH = 0.5
"""A detection matches a true box of its class at IoU ≥ this (mAP@0.5, PASCAL VOC's rule)."""


def detection_hits(
    boxes: Sequence[Box], labels: Sequence[str], scores: Sequence[float],
    true_boxes: Sequence[Box], true_labels: Sequence[str], *, iou_threshold: float = IOU_MATCH,
) -> tuple[dict[str, list[tuple[float, bool]]], dict[str, int]]:
    """One image's detections as ``(score, true positive)`` per class, and its true boxes
    per class.

    Detections are taken best score first; each claims the unclaimed true box of its class
    it overlaps most, a hit when that IoU reaches ``iou_threshold``. A second detection of
    an already claimed object is a false positive, as is a right box with a wrong label.
    """
    if not len(boxes) == len(labels) == len(scores):
        raise ValueError(f"output has {len(boxes)} boxes, {len(labels)} labels and "
                         f"{len(scores)} scores; they must be as many")
    if len(true_boxes) != len(true_labels):
        raise ValueError(f"truth has {len(true_boxes)} boxes and {len(true_labels)} labels; "
                         "they must be as many")
    n_truth: dict[str, int] = {}
    for label in true_labels:
        n_truth[label] = n_truth.get(label, 0) + 1
    claimed = [False] * len(true_boxes)
    hits: dict[str, list[tuple[float, bool]]] = {}
    for i in sorted(range(len(boxes)), key=lambda k: -scores[k]):
        best, best_iou = -1, 0.0
        for j, t in enumerate(true_boxes):
            if claimed[j] or true_labels[j] != labels[i]:
                continue
            overlap = iou(boxes[i], t)
            if overlap > best_iou:
                best, best_iou = j, overlap
        hit = best >= 0 and best_iou >= iou_threshold
        if hit:
            claimed[best] = True
        hits.setdefault(labels[i], []).append((float(scores[i]), hit))
    return hits, n_truth


def average_precision(hits: Sequence[tuple[float, bool]], n_truth: int) -> float:
    """Area under the precision-recall curve of one class (every-point interpolation, as
    PASCAL VOC since 2010 and COCO's per-IoU AP): the mean, over the true objects, of the
    best precision reached at or beyond the recall where each is found (0 when never).
    """
    if n_truth <= 0:
        raise ValueError("average precision needs at least one true object")
    ranked = sorted(hits, key=lambda h: -h[0])
    precisions: list[float] = []
    found: list[bool] = []
    tp = 0
    for k, (_score, hit) in enumerate(ranked, 1):
        tp += hit
        precisions.append(tp / k)
        found.append(hit)
    total, best = 0.0, 0.0
    for precision, hit in zip(reversed(precisions), reversed(found), strict=True):
        best = max(best, precision)
        if hit:
            total += best
    return total / n_truth


@dataclass(frozen=True)
class DetectionAP:
    """Average precision of a detector over a set of images, per class and their mean."""

    map: float
    """Mean of ``per_class`` (1.0 when there was nothing to find and nothing was found)."""
    per_class: dict[str, float]
    """AP of each class that has true objects; a class never true is not scored."""
    n_truth: dict[str, int]


def detection_ap(pairs: Iterable[tuple[Any, Any]], *,
                 iou_threshold: float = IOU_MATCH) -> DetectionAP:
    """mAP@``iou_threshold`` and per-class AP over ``(output, truth)`` pairs.

    Outputs carry ``boxes``, ``labels`` and ``scores``; truths ``boxes`` and ``labels``
    (``[x1, y1, x2, y2]``, the same coordinates). Detections are ranked per class across
    every image; classes with no true object anywhere are left out of the mean (their
    detections are false positives of nothing), as in VOC and COCO. With no true object at
    all, mAP is 1.0 when nothing was detected and 0.0 otherwise.
    """
    hits: dict[str, list[tuple[float, bool]]] = {}
    n_truth: dict[str, int] = {}
    detected = False
    for output, truth in pairs:
        out = _detections(output, "output", scored=True)
        true = _detections(truth, "truth", scored=False)
        image_hits, image_truth = detection_hits(*out, true[0], true[1],
                                                 iou_threshold=iou_threshold)
        detected = detected or bool(out[0])
        for label, h in image_hits.items():
            hits.setdefault(label, []).extend(h)
        for label, n in image_truth.items():
            n_truth[label] = n_truth.get(label, 0) + n
    per_class = {c: average_precision(hits.get(c, []), n) for c, n in sorted(n_truth.items())}
    if not per_class:
        return DetectionAP(0.0 if detected else 1.0, {}, {})
    return DetectionAP(sum(per_class.values()) / len(per_class), per_class, dict(n_truth))


def mean_average_precision(output: Any, truth: Any, *,
                           iou_threshold: float = IOU_MATCH) -> float:
    """mAP@``iou_threshold`` of one image (``detection_ap`` of one pair): the per-record
    quality of a detector whose feedback names the objects."""
    return detection_ap([(output, truth)], iou_threshold=iou_threshold).map


def _detections(value: Any, name: str, *, scored: bool,
                ) -> tuple[list[list[float]], list[str], list[float]]:
    """``(boxes, labels, scores)`` of an output or truth; ValueError naming what is wrong."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be an object with boxes and labels")
    boxes, labels = value.get("boxes") or [], value.get("labels") or []
    if not isinstance(boxes, list) or not isinstance(labels, list):
        raise ValueError(f"{name}: boxes and labels must be lists")
    parsed = []
    for b in boxes:
        if not isinstance(b, list | tuple) or len(b) != 4:
            raise ValueError(f"{name}: a box is [x1, y1, x2, y2], got {str(b)[:50]}")
        parsed.append([float(v) for v in b])
    scores = [float(v) for v in value.get("scores") or []] if scored else [1.0] * len(parsed)
    return parsed, [str(v) for v in labels], scores


METRICS = ("accuracy", "wer", "cer", "iou", "map")

ModelSpec = Family
"""A model family's declaration: ``driftloop.catalogue.Family`` (the name readers knew)."""

MODELS: dict[str, Family] = FAMILIES
"""The model catalogue, ``driftloop.catalogue.FAMILIES``: declared there, read here."""


NO_OBJECT = "none"
"""``top_label`` of a detection output with no boxes."""


def prediction_features(model: str, output: Mapping[str, Any]) -> dict[str, float | str]:
    """The ``output_features`` of one prediction, as numbers or, for ``top_label``, a
    class name (missing ones left out); drift-check reads them from prediction records.

    Detectors: ``n_boxes`` per image, ``max_score``, ``box_area_kpx`` (the summed area of
    the boxes in thousands of pixels) and ``top_label``, the class of the best-scored box
    (``NO_OBJECT`` when none): one categorical value per image, so a shift in the mix of
    classes shows as a chi-square / Jensen-Shannon drift without any label.
    """
    values: dict[str, float | str] = {}
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
        labels = output.get("labels") or []
        if scores and len(labels) == len(scores):
            values["top_label"] = str(labels[max(range(len(scores)), key=scores.__getitem__)])
        elif not boxes:
            values["top_label"] = NO_OBJECT
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
    if metric == "map":
        return mean_average_precision(output, truth)
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
