"""A local stack with just the loop's parts, on free loopback ports (bench and tests).

Kafka, MLServer (digits, keeping each input: policy ``inputs.mode: all``),
feedback-intake, Flink's join and archive (a one-TaskManager session cluster), Prometheus
and Pushgateway, retrain-trigger, promote and the dispatcher — started by the same
``driftloop.local.stack.Stack`` as ``driftloop up``, in their own state folder, so nothing
clashes with a stack already running on the defaults. Apps' feedback goes through
feedback-intake and the join, so training reads the inputs the model server kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from driftloop.settings import Settings

COMPONENTS = ("kafka,mlserver,feedback-intake,flink-jobmanager,flink-taskmanager,flink,"
              "pushgateway,prometheus,retrain-trigger,promote,dispatcher")
def _port_fields() -> list[str]:
    """Every listening port the stack has (each ``*_port`` setting) but Flink's metrics
    port, the first of a run (``free_port_run``): a loop stack must never take a default
    port, or it clashes with a stack already running on this machine."""
    return [n.upper() for n in Settings.model_fields
            if n.endswith("_port") and n != "flink_metrics_port"]


def loop_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """``DRIFTLOOP_*`` variables for a loop-only stack on free ports."""
    from driftloop.local.process import free_port, free_port_run

    env = {f"DRIFTLOOP_{p}": str(free_port()) for p in _port_fields()}
    env.update({
        "DRIFTLOOP_STATE_DIR": str(state_dir),
        "DRIFTLOOP_KAFKA_BOOTSTRAP": f"127.0.0.1:{env['DRIFTLOOP_KAFKA_PORT']}",
        "DRIFTLOOP_BLOB_URL": (state_dir / "blobs").as_uri(),
        "DRIFTLOOP_SERVING_MODELS": "digits",
        "DRIFTLOOP_COMPONENTS": COMPONENTS,
        # Flink runs the join and its archive (labeled records to the blob store) only.
        "DRIFTLOOP_FLINK_PIPELINES": "join,archive",
        "DRIFTLOOP_ARCHIVE_ENGINE": "flink",
        "DRIFTLOOP_FLINK_TASKMANAGERS": "1",
        # The JobManager's reporter port; TaskManager n serves on it + n (a run of four
        # leaves room for two TaskManagers and a standby JobManager).
        "DRIFTLOOP_FLINK_METRICS_PORT": str(free_port_run(4)),
        "DRIFTLOOP_DRIFT_MIN_RECORDS": "30",
        "DRIFTLOOP_SCRAPE_INTERVAL_S": "1",  # a short bake still sees several scrapes
        "DRIFTLOOP_ALERT_WEBHOOK_URL": f"http://127.0.0.1:{env['DRIFTLOOP_RETRAIN_PORT']}/",
        # The stack's processes inherit the environment: none may point elsewhere.
        "DRIFTLOOP_PROMETHEUS_URL": "", "DRIFTLOOP_PUSHGATEWAY_URL": "",
        "DRIFTLOOP_SERVING_URL": "", "DRIFTLOOP_ALERTMANAGER_URL": "",
    })
    env.update(extra)
    if env.get("DRIFTLOOP_TOPOLOGY") == "ha" and "DRIFTLOOP_KAFKA_BOOTSTRAP" not in extra:
        env["DRIFTLOOP_KAFKA_BOOTSTRAP"] = ",".join(
            f"127.0.0.1:{env[f'DRIFTLOOP_{p}']}"
            for p in ("KAFKA_PORT", "KAFKA_2_PORT", "KAFKA_3_PORT")
        )
    return env


@contextmanager
def loop_stack(state_dir: Path, **extra: str) -> Iterator[tuple[Settings, dict[str, Any]]]:
    """Start the loop's stack; yield its settings and endpoints; stop it on exit.

    The stack hands its settings to every process it starts, so nothing here touches
    this process's environment.
    """
    from driftloop.local.components.kafka import bootstrap_for
    from driftloop.local.stack import Stack

    settings = Settings.from_env(loop_env(state_dir, **extra))
    stack = Stack(settings)
    try:
        stack.up()
        endpoints = {s.name: s.endpoint for s in stack.status()}
        yield settings.model_copy(update={"serving_url": endpoints["mlserver"],
                                          "kafka_bootstrap": bootstrap_for(settings)}), endpoints
    finally:
        stack.down()
