"""The quality estimate end to end: predictions and labels on Kafka → drift-check fits the
version's calibration, pushes ``driftloop_quality_estimated`` to the real Pushgateway, and
the real Prometheus scrapes it."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from driftloop import events as ev
from driftloop import topics
from driftloop.blob import open_store
from driftloop.bus import make_producer, publish
from driftloop.drift import build_profile
from driftloop.events import LABELED
from driftloop.monitoring.check import DriftCheckService
from driftloop.monitoring.estimate import load_calibration
from driftloop.monitoring.profiles import save_profile
from driftloop.registry import Registry
from driftloop.settings import PROJECT_ROOT, Settings

pytestmark = pytest.mark.integration
SOURCE = PROJECT_ROOT / "functions" / "drift-check" / "main.py"


@pytest.fixture(scope="module")
def env(
    kafka: Any, monitoring: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    import functions_framework

    blob = tmp_path_factory.mktemp("estimate-blobs")
    settings = Settings(
        kafka_bootstrap=kafka.bootstrap,
        blob_url=blob.as_uri(),
        state_dir=blob,
        pushgateway_port=monitoring.settings.pushgateway_port,
        drift_min_records=30,
    )
    app = functions_framework.create_app(target="drift_check", source=str(SOURCE))
    service = DriftCheckService(settings)
    sys.modules["main"].host.bind(service)
    client = httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://drift-check")
    producer = make_producer(settings)
    yield {
        "client": client,
        "producer": producer,
        "store": open_store(settings.resolved_blob_url, settings),
    }
    producer.close()
    service.close()
    client.close()


def _predictions(model: str, version: str, conf: np.ndarray) -> list[ev.Event]:
    return [
        ev.new_event(
            ev.PREDICTION,
            "test",
            {"model": model, "version": version, "output": {"label": "1", "confidence": float(c)}},
            datacontenttype=ev.JSON,
        )
        for c in conf
    ]


def test_drift_check_pushes_the_estimate_prometheus_scrapes_it(
    env: dict[str, Any], monitoring: Any
) -> None:
    rng = np.random.default_rng(11)
    model = f"est-{uuid.uuid4().hex[:8]}"
    reg = Registry(env["store"])
    v1 = reg.register(model, {"model.bin": b"weights"}).version
    v2 = reg.register(model, {"model.bin": b"weights-2"}).version
    save_profile(
        env["store"],
        model,
        v1,
        build_profile({"confidence": rng.uniform(0.3, 1.0, 2000)}, source="test"),
    )
    # v1: 300 predictions, each labeled; a calibrated model (right with chance = confidence)
    conf = rng.uniform(0.3, 1.0, 300)
    right = rng.uniform(size=300) < conf
    preds = _predictions(model, v1, conf)
    labeled = [
        ev.new_event(
            LABELED,
            "test",
            {
                "model": model,
                "version": v1,
                "prediction_id": p.id,
                "feedback_source": "test",
                "feedback_id": f"fb-{i}",
                "output": p.data["output"],
                "metric": "accuracy",
                "quality": float(r),
            },
            datacontenttype=ev.JSON,
        )
        for i, (p, r) in enumerate(zip(preds, right, strict=True))
    ]
    # v2 (a canary): predictions, no label yet and no calibration of its own
    p = env["producer"]
    publish(
        p, topics.PREDICTIONS, preds + _predictions(model, v2, rng.uniform(0.3, 1, 50)), key=model
    )
    publish(p, topics.LABELED, labeled, key=model)

    r = env["client"].post("/", json={"model": model, "version": v1})
    assert r.status_code == 200, r.text
    est = r.json()["quality_estimated"]
    assert [(e["version"], e["count"]) for e in est] == [(v1, 300)]
    assert est[0]["metric"] == "accuracy"
    assert abs(est[0]["estimated"] - float(right.mean())) < 0.05
    cal = load_calibration(env["store"], model, v1)
    assert cal is not None and cal.samples == 300
    assert load_calibration(env["store"], model, v2) is None

    prom = monitoring.client()
    got = prom.wait_for(
        f'driftloop_quality_estimated{{model="{model}"}}', lambda s: len(s) == 1, timeout_s=20
    )
    assert got[0].labels["version"] == v1 and got[0].labels["job"] == "driftloop-drift-check"
    assert got[0].value == pytest.approx(est[0]["estimated"], rel=1e-12)
    n = prom.query(f'driftloop_quality_estimated_samples{{model="{model}"}}')
    assert [s.value for s in n] == [300.0]

    # The stored calibration is used as is: the next check gives the same estimate.
    again = env["client"].post("/", json={"model": model, "version": v1}).json()
    assert again["quality_estimated"] == est
