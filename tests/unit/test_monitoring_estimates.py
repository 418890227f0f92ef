"""drift-check's estimates per version (no Kafka: the window is given): each version
through its own calibration, fitted once on its labeled records and stored; error-rate
families (speech's wer) calibrated falling; shadow answers left out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from driftloop.monitoring.check import DriftCheckService
from driftloop.monitoring.check_input import Window
from driftloop.monitoring.estimate import calibration_key, load_calibration
from driftloop.settings import Settings


def _service(tmp_path: Path) -> DriftCheckService:
    return DriftCheckService(Settings(blob_url=tmp_path.as_uri(), state_dir=tmp_path))


def _labeled(model: str, version: str, metric: str, conf: np.ndarray, quality: np.ndarray,
             *, shadow: bool = False) -> list[dict[str, object]]:
    return [
        {"model": model, "version": version, "metric": metric, "prediction_id": f"{version}-{i}",
         "feedback_source": "t", "feedback_id": f"f{version}-{i}",
         "output": {"text": "x", "confidence": float(c)}, "quality": float(q),
         **({"shadow": True} if shadow else {})}
        for i, (c, q) in enumerate(zip(conf, quality, strict=True))
    ]


def test_speech_wer_is_estimated_through_a_falling_calibration(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    svc = _service(tmp_path)
    conf = rng.uniform(0.2, 1.0, 400)
    wer = np.clip(1.0 - conf + rng.normal(0, 0.05, 400), 0, None)  # confident: fewer errors
    window = Window({}, _labeled("speech", "1", "wer", conf, wer), {},
                    confidences={"1": list(rng.uniform(0.2, 0.6, 100))})
    [e] = svc.estimates("speech", "1", window)
    assert e.metric == "wer" and e.count == 100
    assert abs(e.value - 0.6) < 0.05  # mean of 1 - U(0.2, 0.6)
    cal = load_calibration(svc.store, "speech", "1")
    assert cal is not None and cal.samples == 400 and np.all(np.diff(cal.y) <= 0)
    svc.close()


def test_each_version_only_through_its_own_calibration_fitted_once(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    svc = _service(tmp_path)
    conf = rng.uniform(0.5, 1.0, 200)
    right = (rng.uniform(size=200) < conf).astype(float)
    labeled = (_labeled("digits", "1", "accuracy", conf, right)
               # v2's labeled answers were shadow ones: nobody was served them
               + _labeled("digits", "2", "accuracy", conf, right, shadow=True))
    window = Window({}, labeled, {}, confidences={"1": [0.9] * 60, "2": [0.9] * 60})
    got = svc.estimates("digits", "1", window)
    assert [e.version for e in got] == ["1"]
    assert load_calibration(svc.store, "digits", "2") is None
    first = svc.store.get(calibration_key("digits", "1"))
    # a later window with other labels: the stored calibration stays as it was
    later = Window({}, _labeled("digits", "1", "accuracy", conf, 1 - right), {},
                   confidences={"1": [0.9] * 60})
    assert svc.estimates("digits", "1", later) == got
    assert svc.store.get(calibration_key("digits", "1")) == first
    # too few labeled pairs: no calibration, no estimate (never a guess)
    few = Window({}, _labeled("digits", "3", "accuracy", conf[:10], right[:10]), {},
                 confidences={"3": [0.9] * 60})
    assert svc.estimates("digits", "3", few) == []
    # an inline window's confidence column is the checked version's
    inline = Window({"output.confidence": np.asarray([0.9] * 40)}, [], {})
    [e] = svc.estimates("digits", "1", inline)
    assert e.count == 40 and e.value == pytest.approx(got[0].value)
    # the report reads only: nothing is fitted for a version without a calibration
    fresh = Window({}, _labeled("digits", "4", "accuracy", conf, right), {},
                   confidences={"4": [0.9] * 60})
    assert svc.estimates("digits", "4", fresh, fit_missing=False) == []
    assert load_calibration(svc.store, "digits", "4") is None
    svc.close()
