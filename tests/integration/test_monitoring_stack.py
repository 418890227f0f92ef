"""The session's real Prometheus: rules loaded, Pushgateway scraped, dashboard queries valid."""

from __future__ import annotations

import json
from typing import Any

import pytest

from driftloop.errors import BadRequest
from driftloop.monitoring import metrics
from driftloop.settings import PROJECT_ROOT

pytestmark = pytest.mark.integration


def test_rules_loaded_and_pushgateway_scraped(monitoring: Any) -> None:
    import httpx

    prom = monitoring.client()
    rules = httpx.get(f"{monitoring.prometheus_url}/api/v1/rules", timeout=5).json()
    names = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
    import yaml

    from driftloop.monitoring.config import RULES_FILE

    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    defined = {r["alert"] for g in groups for r in g["rules"]}
    assert names == defined and {"DriftloopDriftDetected", "DriftloopTargetDown"} <= names
    up = prom.wait_for(
        'up{job="pushgateway"}', lambda s: bool(s) and s[0].value == 1.0, timeout_s=20
    )
    assert up[0].labels["instance"].endswith(str(monitoring.settings.pushgateway_port))


def test_push_replaces_the_model_group(monitoring: Any) -> None:
    from driftloop.monitoring.quality import QualityStat

    prom = monitoring.client()
    stats = [QualityStat("stack-model", "1", "wer", 0.25, 80)]
    metrics.push(
        monitoring.pushgateway_url,
        "stack-model",
        metrics.check_registry("stack-model", "1", None, stats),
    )
    prom.wait_for(
        'driftloop_quality{model="stack-model",metric="wer"}',
        lambda s: [x.value for x in s] == [0.25],
        timeout_s=20,
    )
    stats = [QualityStat("stack-model", "2", "wer", 0.1, 90)]
    metrics.push(
        monitoring.pushgateway_url,
        "stack-model",
        metrics.check_registry("stack-model", "2", None, stats),
    )
    got = prom.wait_for(
        'driftloop_quality{model="stack-model",metric="wer"}',
        lambda s: [x.labels["version"] for x in s] == ["2"],
        timeout_s=20,
    )
    assert got[0].value == 0.1
    metrics.delete(monitoring.pushgateway_url, "stack-model")


def test_every_dashboard_query_is_valid_promql(monitoring: Any) -> None:
    dash = json.loads((PROJECT_ROOT / "infra" / "grafana" / "driftloop-overview.json").read_text())
    prom = monitoring.client()
    for panel in dash["panels"]:
        for target in panel.get("targets", []):  # row panels have none
            prom.query(target["expr"].replace("$model", ".*"))  # raises BadRequest when invalid
    with pytest.raises(BadRequest):
        prom.query("sum by (model (")
