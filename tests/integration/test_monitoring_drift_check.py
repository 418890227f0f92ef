"""drift-check end to end: Kafka window → real Pushgateway → real Prometheus (PromQL) → alert.

The function runs in-process as functions-framework builds it; Kafka, the Pushgateway,
Prometheus and Alertmanager are the real servers of the test session.
"""

from __future__ import annotations

import json
import math
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from driftloop import events as ev
from driftloop import topics
from driftloop.blob import open_store
from driftloop.bus import make_producer, publish
from driftloop.drift import build_profile
from driftloop.events import LABELED, PREPROCESSED
from driftloop.monitoring.check import DriftCheckService
from driftloop.monitoring.profiles import save_profile
from driftloop.registry import Registry
from driftloop.settings import PROJECT_ROOT, Settings

pytestmark = pytest.mark.integration
SOURCE = PROJECT_ROOT / "functions" / "drift-check" / "main.py"
LABELS = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def env(
    kafka: Any, monitoring: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    import functions_framework

    blob = tmp_path_factory.mktemp("drift-blobs")
    settings = Settings(
        kafka_bootstrap=kafka.bootstrap,
        blob_url=blob.as_uri(),
        state_dir=blob,
        pushgateway_port=monitoring.settings.pushgateway_port,
        drift_min_records=30,
        drift_check_every_records=5,
    )
    app = functions_framework.create_app(target="drift_check", source=str(SOURCE))
    service = DriftCheckService(settings)
    sys.modules["main"].host.bind(service)
    client = httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://drift-check")
    producer = make_producer(settings)
    yield {
        "settings": settings,
        "client": client,
        "service": service,
        "producer": producer,
        "store": open_store(settings.resolved_blob_url, settings),
    }
    producer.close()
    service.close()
    client.close()


def _register(env: dict[str, Any], model: str, rng: np.random.Generator) -> str:
    store = env["store"]
    version = Registry(store).register(model, {"model.bin": b"weights"}).version
    ref = {
        "brightness_mean": rng.normal(0.5, 0.1, 5_000),
        "contrast": rng.normal(0.2, 0.05, 5_000),
        "output.label": rng.choice(LABELS, 5_000),
    }
    save_profile(store, model, version, build_profile(ref, source="test"))
    return version


def _feed(
    env: dict[str, Any],
    model: str,
    version: str,
    n: int,
    *,
    shift: float,
    rng: np.random.Generator,
    nan: bool = False,
) -> None:
    pre, preds, labeled = [], [], []
    for i in range(n):
        b = float(rng.normal(0.5 + shift * 0.1, 0.1))
        feats = {"brightness_mean": b, "contrast": float(rng.normal(0.2, 0.05))}
        pre.append(
            ev.new_event(
                PREPROCESSED,
                "test",
                {"model": model, "modality": "image", "features": feats},
                datacontenttype=ev.JSON,
                model=model,
            )
        )
        label = "7" if shift else str(rng.choice(LABELS))
        preds.append(
            ev.new_event(
                ev.PREDICTION,
                "test",
                {"model": model, "version": version, "output": {"label": label}},
                datacontenttype=ev.JSON,
            )
        )
        labeled.append(
            ev.new_event(
                LABELED,
                "test",
                {
                    "model": model,
                    "version": version,
                    "metric": "accuracy",
                    "quality": float(i % 2),
                    "reward": 1.0,
                },
                datacontenttype=ev.JSON,
            )
        )
    p = env["producer"]
    if nan:
        # driftloop never writes NaN, but another producer may: raw JSON with a NaN token.
        bad = pre.pop(3)
        rec = ev.to_kafka(bad, model)
        value = json.dumps(
            {**bad.data, "features": {"brightness_mean": math.nan, "contrast": 0.2}}
        ).encode()
        p.send(topics.preprocessed("image"), key=rec.key, value=value, headers=rec.headers)
    publish(p, topics.preprocessed("image"), pre, key=model)
    publish(p, topics.PREDICTIONS, preds, key=model)
    publish(p, topics.LABELED, labeled, key=model)


def _model() -> str:
    return f"mon-{uuid.uuid4().hex[:8]}"


def _events_for(kafka: Any, model: str) -> list[ev.Event]:
    out = []
    for rec in kafka.read_records(topics.EVENTS):
        e = ev.from_kafka(rec.value, rec.headers, rec.key)
        if (
            e.type == ev.DRIFT_DETECTED
            and isinstance(e.data, dict)
            and e.data.get("model") == model
        ):
            out.append(e)
    return out


def test_drift_check_pushes_metrics_prometheus_reads_them_and_alert_fires(
    env: dict[str, Any], kafka: Any, monitoring: Any
) -> None:
    rng = np.random.default_rng(42)
    model = _model()
    version = _register(env, model, rng)
    _feed(env, model, version, 200, shift=1.0, rng=rng)

    r = env["client"].post("/", json={"model": model})
    assert r.status_code == 200, r.text
    body = r.json()
    verdict = body["verdict"]
    assert body["version"] == version and body["window"]["rows"] == 200
    assert verdict["dataset_drift"] is True
    assert verdict["features"]["brightness_mean"]["drifted"] is True
    assert verdict["features"]["output.label"]["drifted"] is True
    assert verdict["features"]["contrast"]["drifted"] is False
    assert body["quality"] == [
        {"model": model, "version": version, "metric": "accuracy", "mean": 0.5, "count": 200},
        {"model": model, "version": version, "metric": "reward", "mean": 1.0, "count": 200},
    ]

    prom = monitoring.client()
    got = prom.wait_for(
        f'driftloop_drift_detected{{model="{model}"}}',
        lambda s: len(s) == 1 and s[0].value == 1.0,
        timeout_s=20,
    )
    assert got[0].labels["version"] == version
    assert got[0].labels["job"] == "driftloop-drift-check"
    w = body["drift"]["data"]["features"]["brightness_mean"]["scores"]["wasserstein"]
    score = prom.query(
        f'driftloop_drift_score{{model="{model}",feature="brightness_mean",'
        f'statistic="wasserstein"}}'
    )
    assert len(score) == 1 and score[0].value == pytest.approx(w, rel=1e-12)
    quality = prom.query(f'driftloop_quality{{model="{model}",metric="accuracy"}}')
    assert [q.value for q in quality] == [0.5]
    samples = prom.query(f'driftloop_quality_samples{{model="{model}",metric="accuracy"}}')
    assert [q.value for q in samples] == [200.0]

    events = _events_for(kafka, model)
    assert len(events) == 1
    data = ev.DriftDetectedData.parse(events[0].data)
    assert data.model == model and data.version == version
    assert set(data.features) == {"brightness_mean", "output.label"}
    assert body["event"]["id"] == events[0].id

    alert = monitoring.webhook.wait_for("DriftloopDriftDetected", timeout_s=45, model=model)
    assert alert["labels"]["trigger"] == "drift" and alert["status"] == "firing"


def test_unshifted_window_pushes_zero_and_emits_nothing(
    env: dict[str, Any], kafka: Any, monitoring: Any
) -> None:
    rng = np.random.default_rng(7)
    model = _model()
    version = _register(env, model, rng)
    _feed(env, model, version, 300, shift=0.0, rng=rng)
    r = env["client"].post("/", json={"model": model, "version": version})
    assert r.status_code == 200, r.text
    assert r.json()["verdict"]["dataset_drift"] is False and r.json()["event"] is None
    monitoring.client().wait_for(
        f'driftloop_drift_detected{{model="{model}"}}',
        lambda s: len(s) == 1 and s[0].value == 0.0,
        timeout_s=20,
    )
    assert _events_for(kafka, model) == []


def test_kafka_records_fill_the_window_then_check(env: dict[str, Any]) -> None:
    rng = np.random.default_rng(3)
    model = _model()
    version = _register(env, model, rng)
    _feed(env, model, version, 100, shift=0.0, rng=rng)
    statuses = []
    for i in range(5):
        e = ev.new_event(
            ev.PREDICTION, "test", {"model": model, "version": version, "output": {"label": str(i)}}
        )
        headers, payload = ev.to_http_binary(e)
        statuses.append(env["client"].post("/", headers=headers, content=payload))
    assert [s.status_code for s in statuses] == [202, 202, 202, 202, 200]
    assert statuses[-1].json()["model"] == model
    assert statuses[-1].json()["verdict"]["dataset_drift"] is False
    # A full window of a model without a profile is reported, not refused (no dead letter).
    unknown = _model()
    for _ in range(5):
        e = ev.new_event(ev.PREDICTION, "test", {"model": unknown, "version": "1", "output": {}})
        headers, payload = ev.to_http_binary(e)
        last = env["client"].post("/", headers=headers, content=payload)
    assert last.status_code == 200 and last.json()["skipped"]["error"] == "not_found"
    # A promoted version without traffic yet: reported as skipped, not an error.
    fresh = _model()
    v = _register(env, fresh, rng)
    promoted = ev.new_event(ev.MODEL_PROMOTED, "test", {"model": fresh, "version": v})
    headers, payload = ev.to_http_binary(promoted)
    r = env["client"].post("/", headers=headers, content=payload)
    assert r.status_code == 200 and r.json()["skipped"]["error"] == "empty_window"


def test_schedule_tick_checks_each_model(env: dict[str, Any]) -> None:
    rng = np.random.default_rng(5)
    model = _model()
    version = _register(env, model, rng)
    _feed(env, model, version, 60, shift=0.0, rng=rng)
    tick = ev.new_event(
        ev.PING,
        "/apis/v1/namespaces/driftloop/pingsources/drift-check-schedule",
        {"models": [model, "no-such-model"]},
        datacontenttype=ev.JSON,
    )
    r = env["client"].post(
        "/", headers={"content-type": ev.STRUCTURED}, content=json.dumps(ev.to_structured(tick))
    )
    assert r.status_code == 200, r.text
    results = {x["model"]: x for x in r.json()["results"]}
    assert results[model]["status"] == 200 and results[model]["version"] == version
    assert results["no-such-model"]["status"] == 404


def test_bad_inputs_get_clear_4xx(env: dict[str, Any], monitoring: Any) -> None:
    client = env["client"]
    rng = np.random.default_rng(9)

    r = client.post("/", json={"model": "no-such-model"})
    assert r.status_code == 404 and "unknown model" in r.json()["message"]

    empty = _model()
    _register(env, empty, rng)
    r = client.post("/", json={"model": empty})
    assert r.status_code == 400 and r.json()["error"] == "empty_window"

    nan_model = _model()
    _register(env, nan_model, rng)
    # an ad hoc window with an infinite value: DRIFT_NAN_POLICY=raise names the feature
    window = {"brightness_mean": [0.5] * 40 + [math.inf], "contrast": [0.2] * 41}
    r = client.post(
        "/",
        content=json.dumps({"model": nan_model, "window": window}),  # "Infinity" token
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["fields"][0]["field"] == "window.brightness_mean"
    assert r.json()["fields"][0]["rule"] == "finite"

    r = client.post("/", json={"model": nan_model, "window": {"contrast": [0.2] * 5}})
    assert r.status_code == 400 and "at least 30" in r.json()["message"]

    r = client.post("/", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = client.post("/", json={"model": "../etc"})
    assert r.status_code == 400 and r.json()["fields"][0]["field"] == "model"
    r = client.post("/", json=["model"])
    assert r.status_code == 400
    e = ev.new_event(ev.FEEDBACK, "test", {"model": nan_model})
    headers, payload = ev.to_http_binary(e)
    r = client.post("/", headers=headers, content=payload)
    assert r.status_code == 400 and "does not trigger" in r.json()["message"]
    assert client.get("/healthz").status_code == 200

    # The service still works after every refusal.
    window = {
        "brightness_mean": list(rng.normal(0.5, 0.1, 60)),
        "contrast": list(rng.normal(0.2, 0.05, 60)),
        "output.label": ["1"] * 60,
    }
    r = client.post("/", json={"model": nan_model, "window": window})
    assert r.status_code == 200, r.text
    assert r.json()["verdict"]["features"]["output.label"]["drifted"] is True


def test_window_from_a_blob_object(env: dict[str, Any], tmp_path: Path) -> None:
    import pandas as pd

    rng = np.random.default_rng(13)
    model = _model()
    _register(env, model, rng)
    frame = pd.DataFrame(
        {"brightness_mean": rng.normal(0.9, 0.1, 80), "contrast": rng.normal(0.2, 0.05, 80)}
    )
    path = tmp_path / "w.parquet"
    frame.to_parquet(path)
    env["store"].put(f"windows/{model}/w.parquet", path.read_bytes())
    r = env["client"].post("/", json={"model": model, "window_key": f"windows/{model}/w.parquet"})
    assert r.status_code == 200, r.text
    assert r.json()["missing_features"] == ["output.label"]
    assert r.json()["verdict"]["features"]["brightness_mean"]["drifted"] is True
    r = env["client"].post("/", json={"model": model, "window_key": "windows/none.csv"})
    assert r.status_code == 404


def _pushed(monitoring: Any, metric: str, model: str) -> dict[str, float]:
    """``feature`` → value of ``metric`` for ``model`` on the Pushgateway."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{monitoring.pushgateway_url}/metrics", timeout=10).text
    return {
        s.labels["feature"]: s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == metric and s.labels.get("model") == model
    }


def test_a_null_value_is_counted_per_feature_not_a_failed_check(
    env: dict[str, Any], monitoring: Any
) -> None:
    """A prediction with ``confidence: null`` and a preprocessed record with NaN: the check
    that the KafkaSource's fifth record starts answers 200 (nothing is dead-lettered) and
    counts the missing values per feature, in the answer and on the Pushgateway."""
    rng = np.random.default_rng(21)
    model = _model()
    version = Registry(env["store"]).register(model, {"model.bin": b"weights"}).version
    ref = {
        "brightness_mean": rng.normal(0.5, 0.1, 5_000),
        "contrast": rng.normal(0.2, 0.05, 5_000),
        "output.confidence": rng.uniform(0.5, 1.0, 5_000),
    }
    save_profile(env["store"], model, version, build_profile(ref, source="test"))
    _feed(env, model, version, 50, shift=0.0, rng=rng, nan=True)
    text = ev.new_event(
        PREPROCESSED,
        "test",
        {"model": model, "modality": "image", "features": {"brightness_mean": "n/a"}},
        model=model,
    )
    publish(env["producer"], topics.preprocessed("image"), [text], key=model)
    preds = [
        ev.new_event(
            ev.PREDICTION,
            "test",
            {
                "model": model,
                "version": version,
                "output": {"label": "1", "confidence": None if i == 7 else float(rng.uniform())},
            },
        )
        for i in range(50)
    ]
    publish(env["producer"], topics.PREDICTIONS, preds, key=model)
    statuses = []
    for i in range(5):
        e = ev.new_event(
            ev.PREDICTION, "test", {"model": model, "version": version, "output": {"label": str(i)}}
        )
        headers, payload = ev.to_http_binary(e)
        statuses.append(env["client"].post("/", headers=headers, content=payload))
    assert [r.status_code for r in statuses] == [202, 202, 202, 202, 200], statuses[-1].text
    body = statuses[-1].json()
    assert body["missing_values"] == {"brightness_mean": 2, "output.confidence": 1}
    assert body["missing_features"] == []
    assert body["drift"]["data"]["features"]["output.confidence"]["n_current"] == 49
    pushed = _pushed(monitoring, "driftloop_drift_missing_values", model)
    assert pushed == {"brightness_mean": 2.0, "contrast": 0.0, "output.confidence": 1.0}
    # an ad hoc window with a null: counted the same way
    window = {
        "brightness_mean": [*rng.normal(0.5, 0.1, 40), None],
        "contrast": list(rng.normal(0.2, 0.05, 41)),
    }
    r = env["client"].post("/", json={"model": model, "window": window})
    assert r.status_code == 200, r.text
    assert r.json()["missing_values"] == {"brightness_mean": 1}
    assert r.json()["missing_features"] == ["output.confidence"]


def test_unsafe_names_and_keys_are_refused_naming_field_and_rule(env: dict[str, Any]) -> None:
    client = env["client"]
    r = client.post("/", json={"model": "../a", "version": "../1", "window_key": "/etc/passwd"})
    assert r.status_code == 400
    assert {(f["field"], f["rule"]) for f in r.json()["fields"]} == {
        ("model", "safe-name"),
        ("version", "safe-name"),
        ("window_key", "relative-key"),
    }
    for key in ("../x", "/etc/passwd", "", "windows/../../x.csv", "a\\b.csv", "a//b.csv"):
        r = client.post("/", json={"model": "digits", "window_key": key})
        assert r.status_code == 400, (key, r.text)
        assert [(f["field"], f["rule"]) for f in r.json()["fields"]] == [
            ("window_key", "relative-key")
        ], key
    r = client.post("/", json={"model": "digits", "window_key": "windows/w.txt"})
    assert r.status_code == 400 and r.json()["fields"][0]["rule"] == "format"
    r = client.post("/", json={"model": "digits", "window_key": "x" * 2000 + ".csv"})
    assert r.status_code == 400 and r.json()["fields"][0]["rule"] == "max-length"
    for version in ("../1", "", "1/2", "1\n", 7):
        r = client.post("/", json={"model": "digits", "version": version})
        assert r.status_code == 400, (version, r.text)
        assert [(f["field"], f["rule"]) for f in r.json()["fields"]] == [("version", "safe-name")]
    # a promotion event with an unsafe version: 400, not a registry lookup
    e = ev.new_event(ev.MODEL_PROMOTED, "test", {"model": "digits", "version": "../1"})
    headers, payload = ev.to_http_binary(e)
    r = client.post("/", headers=headers, content=payload)
    assert r.status_code == 400 and r.json()["fields"][0]["field"] == "version"


def _ping(env: dict[str, Any], data: Any) -> httpx.Response:
    tick = ev.new_event(
        ev.PING,
        "/apis/v1/namespaces/driftloop/pingsources/drift-check-schedule",
        data,
        datacontenttype=ev.JSON,
    )
    return env["client"].post(
        "/", headers={"content-type": ev.STRUCTURED}, content=json.dumps(ev.to_structured(tick))
    )


def test_ping_data_and_models_are_validated_and_bounded(env: dict[str, Any]) -> None:
    for data in (["digits"], "digits", 7):
        r = _ping(env, data)
        assert r.status_code == 400, (data, r.text)
        assert r.json()["fields"] == [
            {"field": "data", "rule": "object", "message": "must be a JSON object (or absent)"}
        ]
    r = _ping(env, {"models": "digits"})
    assert r.status_code == 400 and r.json()["fields"][0]["rule"] == "array"
    limit = env["settings"].drift_check_max_models
    r = _ping(env, {"models": [f"m{i}" for i in range(limit + 1)]})
    assert r.status_code == 400
    assert r.json()["fields"][0] == {
        "field": "data.models",
        "rule": "max-items",
        "message": f"at most {limit} names",
    }
    r = _ping(env, {"models": ["../x", "ok", 3]})
    assert r.status_code == 400
    assert [(f["field"], f["rule"]) for f in r.json()["fields"]] == [
        ("data.models[0]", "safe-name"),
        ("data.models[2]", "safe-name"),
    ]
    r = _ping(env, {"models": ["no-such-model"] * 3})
    assert r.status_code == 200
    assert [x["model"] for x in r.json()["results"]] == ["no-such-model"]
