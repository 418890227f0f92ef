"""The demo's drift step: inject a shift, watch Prometheus, get the alert, write the report.

``step_drift(ctx)`` follows the demo's step protocol (``driftloop.demo.context.Step``): it uses the
running local stack (Kafka, Pushgateway, Prometheus, Alertmanager) through the endpoints
in ``ctx`` and records its figures in ``ctx.summary["drift"]``.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np

from driftloop import events as ev
from driftloop import topics
from driftloop.bus import make_producer, publish
from driftloop.catalogue import FAMILIES
from driftloop.demo.context import DemoContext
from driftloop.drift import build_profile, detect
from driftloop.events import PREPROCESSED
from driftloop.monitoring.check import DriftCheckService
from driftloop.monitoring.profiles import load_profile, save_profile
from driftloop.monitoring.prom import PrometheusClient
from driftloop.registry import Registry

__all__ = ["DEMO_MODEL", "FEATURES", "step_drift"]

# The face detector: its version has no trained reference profile (digits' does, over its
# outputs), and it has no retrain policy, so the alert this step fires is shown, not acted on.
DEMO_MODEL = "faces"
# Image features of the model: mean and spread in the reference, and the injected shift
# (brighter, lower-contrast, blurrier inputs, e.g. a camera change).
FEATURES = {
    "brightness_mean": (0.30, 0.05, 2.0),
    "brightness_std": (0.40, 0.05, -1.5),
    "contrast": (0.80, 0.10, -1.0),
    "blur": (0.10, 0.03, 3.0),
}


def _rows(rng: np.random.Generator, n: int, shifted: bool) -> list[dict[str, float]]:
    return [
        {
            k: float(rng.normal(mu + (sh * sd if shifted else 0.0), sd))
            for k, (mu, sd, sh) in FEATURES.items()
        }
        for _ in range(n)
    ]


def _publish(settings: Any, model: str, rows: list[dict[str, float]]) -> None:
    entry = FAMILIES.get(model)
    modality = entry.modality if entry else "image"
    events = [
        ev.new_event(
            PREPROCESSED,
            "driftloop/demo",
            {"model": model, "modality": modality, "features": r},
            datacontenttype=ev.JSON,
            model=model,
        )
        for r in rows
    ]
    producer = make_producer(settings)
    try:
        publish(producer, topics.preprocessed(modality), events, key=model)
    finally:
        producer.close()


def step_drift(ctx: DemoContext, n: int = 300, model: str = DEMO_MODEL, seed: int = 7) -> None:
    """Inject a shift: drift-check pushes the drift, Prometheus alerts, the report is written.

    The samples are seeded: with four features each tested at 0.05, unseeded normal inputs
    show a drift share of 50% in about one run of seventy (two features by chance)."""
    from driftloop.blob import open_store
    from driftloop.monitoring.report import write_report

    console = ctx.console
    settings = ctx.kafka_settings.model_copy(update={"drift_window_max_records": n})
    store = open_store(settings.resolved_blob_url, settings)
    registry = Registry(store)
    service = DriftCheckService(settings, store=store)
    # The reference its own stream: a stored profile leaves the samples the same.
    ref_rng, rng = np.random.default_rng(seed), np.random.default_rng(seed + 1)
    try:
        version = service.resolve_version(model, None)
        try:
            profile = load_profile(store, model, version)
        except Exception:
            ref = _rows(ref_rng, 5_000, shifted=False)
            profile = build_profile(
                {k: [r[k] for r in ref] for k in FEATURES}, source="demo reference window"
            )
            key = save_profile(store, model, version, profile)
            console.print(f"stored a reference profile at {key}")
        _publish(settings, model, _rows(rng, n, shifted=False))
        before = service.check(model, version)
        console.print(
            f"{model} v{version}, {n} normal inputs: share drifted "
            f"{before['verdict']['share_drifted']:.0%}"
        )
        _publish(settings, model, _rows(rng, n, shifted=True))
        after = service.check(model, version)
        console.print(
            f"{model} v{version}, {n} shifted inputs: share drifted "
            f"{after['verdict']['share_drifted']:.0%}"
        )
        for name, f in after["verdict"]["features"].items():
            console.print(
                f"  {name:16s} {f['statistic']:12s} {f['value']:.3g} "
                f"(threshold {f['threshold']}) {'DRIFT' if f['drifted'] else ''}"
            )
        prom = PrometheusClient(settings.resolved_prometheus_url)
        with console.status("waiting for Prometheus to scrape the drift metric"):
            got = prom.wait_for(
                f'driftloop_drift_share{{model="{model}"}}',
                lambda s: bool(s) and s[0].value >= settings.drift_share,
                timeout_s=60,
            )
        console.print(f'Prometheus: driftloop_drift_share{{model="{model}"}} = {got[0].value}')
        fired = None
        deadline = time.monotonic() + 90
        with console.status("waiting for the DriftloopDriftDetected alert"):
            while time.monotonic() < deadline and fired is None:
                fired = next(
                    (
                        a
                        for a in prom.alerts()
                        if a["labels"].get("alertname") == "DriftloopDriftDetected"
                        and a["labels"].get("model") == model
                        and a["state"] == "firing"
                    ),
                    None,
                )
                time.sleep(1)
        console.print(
            "alert DriftloopDriftDetected: "
            + ("firing" if fired else "not yet firing")
            + f" -> Alertmanager -> {settings.alert_webhook_url}"
        )
        out = settings.state_dir / "reports" / model
        window = service.read_window(model, version, list(profile.features))
        present = {k: v for k, v in window.columns.items() if k in profile.features}
        shown = replace(profile, features={k: profile.features[k] for k in present})
        result = detect(shown, present)
        files = write_report(
            out,
            model=model,
            version=version,
            profile=shown,
            result=result,
            current=present,
            labeled=[],
            quality=[],
        )
        console.print(f"report: {files.html}")
        ctx.summary["drift"] = {
            "model": model,
            "version": version,
            "share_before": before["verdict"]["share_drifted"],
            "share_after": after["verdict"]["share_drifted"],
            "event": after["event"],
            "alert": "firing" if fired else "pending",
            "report": str(files.html),
            "registry_versions": registry.versions(model),
        }
    finally:
        service.close()
