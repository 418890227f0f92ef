"""Prometheus, Pushgateway, Alertmanager and node-exporter (Debian packages) in the stack.

Configuration is rendered from the settings into ``<state_dir>/monitoring`` before start;
Prometheus scrapes exactly the selected components that serve metrics. When the binaries
are not installed the stack runs without them.
"""

from __future__ import annotations

from driftloop.local.components import ComponentSpec
from driftloop.local.process import http_ok
from driftloop.monitoring import config
from driftloop.settings import Settings

ORDER = 20


def components(settings: Settings) -> list[ComponentSpec]:
    bins = (config.PROMETHEUS_BIN, config.PUSHGATEWAY_BIN, config.ALERTMANAGER_BIN)
    if not all(config.binary(b) for b in bins):
        return []
    files = config.MonitoringFiles(settings.state_dir / "monitoring")
    prom = settings.resolved_prometheus_url
    push = settings.resolved_pushgateway_url
    alerts = settings.resolved_alertmanager_url

    def prepare() -> None:
        from driftloop.local.components import selected

        jobs = [config.ScrapeJob(s.name, (s.metrics,)) for s in selected(settings) if s.metrics]
        config.write_configs(settings, files.folder, jobs)

    node = f"127.0.0.1:{settings.node_exporter_port}"
    host = []
    if config.binary(config.NODE_EXPORTER_BIN):
        host.append(ComponentSpec(
            name="node-exporter",
            argv=config.node_exporter_argv(settings.node_exporter_port),
            order=ORDER,
            endpoint=f"http://{node}",
            health=lambda: http_ok(f"http://{node}/metrics", timeout_s=3.0),
            ports=(settings.node_exporter_port,),
            start_timeout_s=30,
            metrics=node,
        ))

    return [
        *host,
        ComponentSpec(
            name="pushgateway",
            argv=config.pushgateway_argv(files, settings.pushgateway_port),
            order=ORDER,
            endpoint=push,
            health=lambda: http_ok(f"{push}/-/ready"),
            ports=(settings.pushgateway_port,),
            start_timeout_s=30,
            prepare=prepare,
            extra={"metrics": f"{push}/metrics", "job": "driftloop-drift-check"},
            metrics=f"127.0.0.1:{settings.pushgateway_port}",
        ),
        ComponentSpec(
            name="alertmanager",
            argv=config.alertmanager_argv(files, settings.alertmanager_port),
            order=ORDER,
            endpoint=alerts,
            health=lambda: http_ok(f"{alerts}/-/ready"),
            ports=(settings.alertmanager_port,),
            start_timeout_s=30,
            prepare=prepare,
            extra={"webhook": settings.alert_webhook_url, "config": str(files.alertmanager)},
            metrics=f"127.0.0.1:{settings.alertmanager_port}",
        ),
        ComponentSpec(
            name="prometheus",
            argv=config.prometheus_argv(files, settings.prometheus_port),
            order=ORDER,
            endpoint=prom,
            health=lambda: http_ok(f"{prom}/-/ready"),
            ports=(settings.prometheus_port,),
            start_timeout_s=60,
            prepare=prepare,
            extra={"rules": str(files.rules), "alerts": f"{prom}/api/v1/alerts"},
            metrics=f"127.0.0.1:{settings.prometheus_port}",
        ),
    ]
