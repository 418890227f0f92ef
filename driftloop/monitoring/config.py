"""Renders the Prometheus and Alertmanager configuration of the local stack from settings.

The templates live in ``infra/prometheus/prometheus.yml.tmpl`` and
``infra/alertmanager/alertmanager.yml.tmpl``; the rules in ``infra/prometheus/rules/``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from string import Template

from driftloop.settings import PROJECT_ROOT, Settings

INFRA = PROJECT_ROOT / "infra"
PROMETHEUS_TEMPLATE = INFRA / "prometheus" / "prometheus.yml.tmpl"
ALERTMANAGER_TEMPLATE = INFRA / "alertmanager" / "alertmanager.yml.tmpl"
RULES_FILE = INFRA / "prometheus" / "rules" / "driftloop-alerts.yml"


@dataclass(frozen=True)
class MonitoringFiles:
    """Where the rendered configuration of one local stack lives."""

    folder: Path

    @property
    def prometheus(self) -> Path:
        return self.folder / "prometheus.yml"

    @property
    def rules(self) -> Path:
        return self.folder / "rules" / RULES_FILE.name

    @property
    def alertmanager(self) -> Path:
        return self.folder / "alertmanager.yml"

    @property
    def prometheus_data(self) -> Path:
        return self.folder / "prometheus-data"

    @property
    def alertmanager_data(self) -> Path:
        return self.folder / "alertmanager-data"

    @property
    def function_token(self) -> Path:
        """Alertmanager's credentials file: the bearer token it sends to retrain-trigger."""
        return self.folder / "function-token"

    @property
    def pushgateway_data(self) -> Path:
        return self.folder / "pushgateway.store"


def _targets(items: list[str]) -> str:
    return ", ".join(f'"{t}"' for t in items if t)


def _duration(seconds: float) -> str:
    return f"{max(int(seconds * 1000), 1)}ms"


@dataclass(frozen=True)
class ScrapeJob:
    """One Prometheus scrape job: its name (a component's) and ``host:port`` targets."""

    name: str
    targets: tuple[str, ...]

    @property
    def honor_labels(self) -> bool:
        """The Pushgateway keeps the labels drift-check pushed (job, model, version)."""
        return self.name == "pushgateway"


def default_jobs(settings: Settings) -> list[ScrapeJob]:
    """The jobs of a monitoring stack started outside ``driftloop up`` (test fixtures):
    the monitoring servers, feedback-intake, MLServer and the dispatcher."""
    jobs = [
        ScrapeJob("prometheus", (f"127.0.0.1:{settings.prometheus_port}",)),
        ScrapeJob("pushgateway", (f"127.0.0.1:{settings.pushgateway_port}",)),
        ScrapeJob("feedback-intake", (f"127.0.0.1:{settings.intake_port}",)),
        ScrapeJob("mlserver", (f"127.0.0.1:{settings.serving_metrics_port}",)),
    ]
    if settings.dispatcher_metrics_port:
        jobs.append(ScrapeJob("dispatcher", (f"127.0.0.1:{settings.dispatcher_metrics_port}",)))
    return jobs


def external_jobs(settings: Settings) -> list[ScrapeJob]:
    """Targets the stack did not start, named in the settings."""
    out = []
    for name, value in (("flink", settings.flink_metrics_targets),
                        ("functions", settings.function_metrics_targets)):
        if value:
            out.append(ScrapeJob(name, value))
    return out


def _scrape_configs(jobs: list[ScrapeJob]) -> str:
    lines = []
    for job in jobs:
        lines.append(f"  - job_name: {json.dumps(job.name)}")
        if job.honor_labels:
            lines.append("    honor_labels: true")
        lines.append("    static_configs:")
        lines.append(f"      - targets: [{_targets(list(job.targets))}]")
    return "\n".join(lines) if lines else "  []"


def render_prometheus(
    settings: Settings, rules_file: Path, jobs: list[ScrapeJob] | None = None
) -> str:
    """``jobs``: what to scrape (``driftloop up`` passes one job per started component
    serving metrics); None scrapes :func:`default_jobs`. Settings' external targets are added."""
    tmpl = Template(PROMETHEUS_TEMPLATE.read_text())
    chosen = default_jobs(settings) if jobs is None else list(jobs)
    return tmpl.substitute(
        scrape_interval=_duration(settings.scrape_interval_s),
        evaluation_interval=_duration(settings.scrape_interval_s),
        rules_file=str(rules_file),
        alertmanager_target=_targets([f"127.0.0.1:{settings.alertmanager_port}"]),
        scrape_configs=_scrape_configs(chosen + external_jobs(settings)),
    )


def render_alertmanager(
    settings: Settings, *, group_wait_s: float = 1.0, credentials_file: Path | None = None
) -> str:
    """``credentials_file`` (the token itself never enters the configuration) makes the
    webhook send ``Authorization: Bearer <its content>``."""
    tmpl = Template(ALERTMANAGER_TEMPLATE.read_text())
    http_config = ""
    if credentials_file is not None:
        http_config = ("http_config:\n          authorization:\n            type: Bearer\n"
                       f"            credentials_file: '{credentials_file}'")
    return tmpl.substitute(
        webhook_url=settings.alert_webhook_url,
        webhook_http_config=http_config,
        group_wait=_duration(group_wait_s),
        group_interval=_duration(max(group_wait_s, 1.0) * 10),
        repeat_interval="1h",
    )


ABSENCE_ALERTS = {"DriftloopFeedbackIntakeDown": "feedback-intake",
                  "DriftloopModelServersDown": "mlserver",
                  "DriftloopFlinkJobMissing": "flink-jobmanager"}
"""Alerts that fire when a component's targets are absent, by the component they watch."""


def rules_for(jobs: list[ScrapeJob] | None) -> str:
    """The rules file, without the absence alerts of components the stack does not run
    (``jobs`` None: all of them): a component left out on purpose is no outage."""
    text = RULES_FILE.read_text()
    if jobs is None:
        return text
    import yaml

    running = {j.name for j in jobs}
    doc = yaml.safe_load(text)
    for group in doc["groups"]:
        group["rules"] = [r for r in group["rules"]
                          if ABSENCE_ALERTS.get(r.get("alert", ""), "") in ("", *running)]
    return yaml.safe_dump(doc, sort_keys=False, width=1000)


def write_configs(
    settings: Settings, folder: Path | None = None, jobs: list[ScrapeJob] | None = None
) -> MonitoringFiles:
    """Render both configurations and copy the rules under ``folder`` (default: state dir);
    ``jobs`` as for :func:`render_prometheus`."""
    files = MonitoringFiles(folder or settings.state_dir / "monitoring")
    files.rules.parent.mkdir(parents=True, exist_ok=True)
    files.rules.write_text(rules_for(jobs))
    files.prometheus.write_text(render_prometheus(settings, files.rules, jobs))
    token_file = None
    if settings.function_token_list:
        token_file = files.function_token
        token_file.unlink(missing_ok=True)
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(settings.function_token_list[0])
    files.alertmanager.write_text(render_alertmanager(settings, credentials_file=token_file))
    for d in (files.prometheus_data, files.alertmanager_data):
        d.mkdir(parents=True, exist_ok=True)
    return files


PROMETHEUS_BIN = "prometheus"
PUSHGATEWAY_BIN = "prometheus-pushgateway"
ALERTMANAGER_BIN = "prometheus-alertmanager"
PROMTOOL_BIN = "promtool"
NODE_EXPORTER_BIN = "prometheus-node-exporter"

# Host resources the dashboard and the host alerts read; the other collectors stay off
# (fewer series, shorter scrapes).
NODE_COLLECTORS = ("cpu", "meminfo", "filesystem", "netdev", "loadavg", "diskstats", "pressure")


def binary(name: str) -> str | None:
    """Absolute path of an installed Debian monitoring binary, or None."""
    return shutil.which(name)


def prometheus_argv(files: MonitoringFiles, port: int) -> list[str]:
    return [
        binary(PROMETHEUS_BIN) or PROMETHEUS_BIN,
        f"--config.file={files.prometheus}",
        f"--storage.tsdb.path={files.prometheus_data}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        "--storage.tsdb.retention.time=7d",
        "--log.level=warn",
    ]


def pushgateway_argv(files: MonitoringFiles, port: int) -> list[str]:
    return [
        binary(PUSHGATEWAY_BIN) or PUSHGATEWAY_BIN,
        f"--web.listen-address=127.0.0.1:{port}",
        f"--persistence.file={files.pushgateway_data}",
        "--web.enable-admin-api",
        "--log.level=warn",
    ]


def alertmanager_argv(files: MonitoringFiles, port: int) -> list[str]:
    return [
        binary(ALERTMANAGER_BIN) or ALERTMANAGER_BIN,
        f"--config.file={files.alertmanager}",
        f"--storage.path={files.alertmanager_data}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        "--log.level=warn",
    ]


def node_exporter_argv(port: int) -> list[str]:
    return [
        binary(NODE_EXPORTER_BIN) or NODE_EXPORTER_BIN,
        f"--web.listen-address=127.0.0.1:{port}",
        "--collector.disable-defaults",
        *(f"--collector.{c}" for c in NODE_COLLECTORS),
        "--log.level=warn",
    ]
