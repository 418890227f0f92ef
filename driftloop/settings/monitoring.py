"""Monitoring: Prometheus, Pushgateway, Alertmanager, and drift-check's windows and tests."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from driftloop.settings.fields import CommaList

__all__ = ["DriftSettings", "MonitoringSettings"]


class MonitoringSettings(BaseModel):
    """Where the monitoring servers are, what they scrape and where alerts go."""

    prometheus_port: int = Field(9090, description="Port of the local Prometheus.")
    pushgateway_port: int = Field(9091, description="Port of the local Pushgateway.")
    alertmanager_port: int = Field(
        9094, description="Port of the local Alertmanager (9093 is Kafka's controller)."
    )
    prometheus_url: str = Field("", description="Prometheus base URL; empty means the local one.")
    pushgateway_url: str = Field(
        "", description="Pushgateway base URL drift-check pushes to; empty means the local one."
    )
    alertmanager_url: str = Field(
        "", description="Alertmanager base URL; empty means the local one."
    )
    alert_webhook_url: str = Field(
        "http://127.0.0.1:8083/",
        description="Where Alertmanager posts alerts: the retrain-trigger function's URL.",
    )
    scrape_interval_s: float = Field(
        5.0,
        gt=0,
        description="Scrape and rule evaluation interval of the local Prometheus. The canary "
        "guard counts the model server's scrapes in a bake against it: set it to the interval "
        "Prometheus scrapes MLServer at (Kubernetes: the PodMonitor's 15 s).",
    )
    flink_metrics_targets: CommaList = Field(
        (), description="Comma-separated host:port of Flink Prometheus reporters to scrape."
    )
    function_metrics_targets: CommaList = Field(
        (), description="Comma-separated host:port of functions serving /metrics to scrape."
    )

    @property
    def resolved_prometheus_url(self) -> str:
        return (self.prometheus_url or f"http://127.0.0.1:{self.prometheus_port}").rstrip("/")

    @property
    def resolved_pushgateway_url(self) -> str:
        return (self.pushgateway_url or f"http://127.0.0.1:{self.pushgateway_port}").rstrip("/")

    @property
    def resolved_alertmanager_url(self) -> str:
        return (self.alertmanager_url or f"http://127.0.0.1:{self.alertmanager_port}").rstrip("/")


class DriftSettings(BaseModel):
    """drift-check: how much data makes a window and when a dataset counts as drifted."""

    drift_window_s: float = Field(
        3600.0, gt=0, description="How far back drift-check reads records for the current window."
    )
    drift_window_max_records: int = Field(
        10_000, ge=1, description="Most records per topic drift-check reads into one window."
    )
    drift_min_records: int = Field(
        30, ge=1, description="Fewest records a window needs before drift-check judges it."
    )
    drift_check_every_records: int = Field(
        500, ge=1, description="Kafka records per model that fill a window and trigger a check."
    )
    drift_share: float = Field(
        0.5, gt=0, le=1, description="Share of drifted features at which the dataset drifts."
    )
    drift_nan_policy: Literal["raise", "omit"] = Field(
        "raise",
        description="±inf values in an ad hoc drift-check window: 'raise' (400 naming the "
        "feature) or 'omit'. Missing values (null, NaN; ±inf in windows read from Kafka) are "
        "always counted per feature and left out.",
    )
    drift_check_max_models: int = Field(
        100,
        ge=1,
        le=10_000,
        description="Most model names one drift-check ping may list (data.models); more is a 400.",
    )
