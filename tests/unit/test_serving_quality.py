"""The serving models' declarations in driftloop.quality and their prediction features."""

from __future__ import annotations

from driftloop.quality import MODELS, prediction_features, score


def test_every_served_model_declares_task_metric_runtime_and_features():
    tasks = {m: (s.task, s.metric) for m, s in MODELS.items()}
    assert tasks["speech"] == ("speech-to-text", "wer")
    assert tasks["ocr"] == ("ocr", "cer")
    assert tasks["faces"] == ("object-detection", "iou")
    assert tasks["objects"] == ("object-detection", "map")
    assert tasks["digits"] == ("classification", "accuracy")
    for spec in MODELS.values():
        assert spec.runtime and spec.runtime.startswith("seldon.runtimes.")
        assert spec.drift_features and spec.output_features


def test_prediction_features_per_family():
    assert prediction_features("speech", {"text": "hello there", "confidence": 0.8}) == {
        "n_words": 2.0, "confidence": 0.8}
    assert prediction_features("faces", {"boxes": [[0, 0, 10, 20]], "labels": ["face"],
                                         "scores": [0.7]}) == {
        "n_boxes": 1.0, "max_score": 0.7, "box_area_kpx": 0.2}
    assert prediction_features("objects", {"boxes": [[0, 0, 10, 20], [0, 0, 5, 5]],
                                           "labels": ["cup", "cat"], "scores": [0.4, 0.8]}
                               ) == {"top_label": "cat", "n_boxes": 2.0, "max_score": 0.8}
    assert prediction_features("digits", {"label": 3, "confidence": 0.9, "labels": [3]}) == {
        "label": 3.0, "confidence": 0.9}
    assert prediction_features("ocr", {"text": "ab c", "confidence": 0.5, "boxes": [[0] * 4]}
                               ) == {"n_words": 2.0, "n_chars": 4.0, "confidence": 0.5}


def test_scores_from_model_outputs():
    assert score("digits", {"label": 4}, {"label": 4}) == 1.0
    assert score("ocr", {"text": "abcd"}, {"text": "abce"}) == 0.25
    assert score("faces", {"boxes": [[0, 0, 10, 10]]}, {"boxes": [[0, 0, 10, 10]]}) == 1.0
