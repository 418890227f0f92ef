"""Per-record quality metrics."""

from __future__ import annotations

import pytest

from driftloop import quality


def test_wer_and_cer():
    assert quality.wer("the cat sat", "the cat sat") == 0
    assert quality.wer("the cat sat", "the bat sat") == pytest.approx(1 / 3)
    assert quality.wer("The cat, sat!", "the cat sat") == 0
    assert quality.wer("a b", "") == 1
    assert quality.cer("hello", "hallo") == pytest.approx(0.2)
    assert quality.cer("", "") == 0


def test_iou_and_mean_iou():
    assert quality.iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1
    assert quality.iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert quality.iou([0, 0, 1, 1], [2, 2, 3, 3]) == 0
    assert quality.mean_iou([[0, 0, 10, 10]], [[0, 0, 10, 10], [20, 20, 30, 30]]) == 0.5
    assert quality.mean_iou([], []) == 1
    assert quality.mean_iou([[0, 0, 1, 1]], []) == 0


def test_score_uses_the_models_metric():
    assert quality.score("digits", {"label": 3}, 3) == 1
    assert quality.score("digits", {"label": 3}, {"label": 4}) == 0
    assert quality.score("speech", {"text": "hello world"}, "hello word") == 0.5
    assert quality.score("faces", {"boxes": [[0, 0, 2, 2]]}, {"boxes": [[0, 0, 2, 2]]}) == 1
    with pytest.raises(KeyError, match="unknown model"):
        quality.score("nope", {}, 1)
