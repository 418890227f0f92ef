"""The local stack's serving components: names, ports, endpoints, and the first versions."""

from __future__ import annotations

import json

from driftloop.blob import open_store
from driftloop.local.components import serving
from driftloop.registry import Registry
from driftloop.settings import Settings


def test_mlserver_component_lists_v2_endpoints_and_registers_champions(tmp_path):
    settings = Settings(state_dir=tmp_path, serving_http_port=18090, serving_grpc_port=18091,
                        serving_metrics_port=18092)
    specs = {s.name: s for s in serving.components(settings)}
    assert set(specs) == {"mlserver", "serving-stream"}
    ml = specs["mlserver"]
    assert ml.order == 40 and tuple(ml.ports) == (18090, 18091, 18092)
    assert ml.endpoint == "http://127.0.0.1:18090"
    assert ml.extra["models"]["ocr"]["infer"] == "http://127.0.0.1:18090/v2/models/ocr/infer"
    assert ml.extra["metrics"] == "http://127.0.0.1:18092/metrics"
    assert ml.env["PYTHONPATH"] and ml.env["DRIFTLOOP_BLOB_URL"] == settings.resolved_blob_url
    assert ml.health() is False  # nothing listens yet
    ml.prepare()
    config = json.loads((tmp_path / "serving" / "server" / "settings.json").read_text())
    assert config["http_port"] == 18090 and config["parallel_workers"] == 0
    assert config["model_repository_implementation"].endswith("RegistryRepository")
    registry = Registry(open_store(settings.resolved_blob_url, settings))
    assert {m: registry.alias(m, "champion") for m in registry.models()} == {
        "speech": "1", "ocr": "1", "faces": "1", "objects": "1", "digits": "1"}
    ml.prepare()  # a second start keeps the registry as it is
    assert registry.versions("digits") == ["1"]
    deploy = json.loads(registry.store.get("models/digits/1/artifact/model-settings.json"))
    assert deploy["implementation"] == "seldon.runtimes.digits.DigitsRuntime"
