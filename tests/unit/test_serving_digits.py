"""The digits trainer: trains, evaluates on the holdout, predicts from images."""

from __future__ import annotations

import numpy as np
import pytest

from driftloop.errors import BadRequest
from driftloop.serving.models import digits


def test_train_and_evaluate_on_the_holdout():
    train, holdout = digits.split(digits.load_dataset())
    assert len(train) + len(holdout) == 1797
    artifact = digits.train(train, {"kind": "svc"})  # its duration: bench/local_costs.py
    assert set(artifact) == {"model.pkl", "params.json"}
    assert digits.evaluate(artifact, holdout)["accuracy"] >= 0.97
    logreg = digits.train(train, {"kind": "logreg"})
    assert digits.evaluate(logreg, holdout)["accuracy"] >= 0.93
    with pytest.raises(ValueError):
        digits.train(train, {"kind": "forest"})


def test_model_predicts_rows_and_rejects_bad_shapes():
    train, holdout = digits.split(digits.load_dataset())
    model = digits.DigitsModel.from_artifact(digits.train(train))
    out = model.predict(None, holdout.X[:3])
    assert out["labels"] == holdout.y[:3].tolist() and "label" not in out
    one = model.predict(None, holdout.X[0].reshape(8, 8)[None])
    assert one["label"] == holdout.y[0] and 0 < one["confidence"] <= 1
    with pytest.raises(BadRequest, match="shape"):
        model.predict(None, np.zeros((2, 10)))
    with pytest.raises(BadRequest, match="finite"):
        model.predict(None, np.full((1, 64), np.inf))


def test_image_features_invert_dark_ink():
    row = digits.load_dataset().X[0].reshape(8, 8)
    scan = 255 - (row / 16 * 255)
    feats = digits.image_to_features(np.kron(scan, np.ones((8, 8))))
    assert feats.shape == (1, 64)
    assert np.corrcoef(feats.ravel(), row.ravel())[0, 1] > 0.95
