"""The Kafka broker of the local stack, with the DESIGN.md topics created once it is up."""

from __future__ import annotations

import sys
import time

from driftloop import bus
from driftloop.errors import StackError
from driftloop.local.components import ComponentSpec
from driftloop.local.kafka import KafkaBroker, jmx_agent
from driftloop.local.process import http_ok
from driftloop.settings import PROJECT_ROOT, Settings


def broker_for(settings: Settings) -> KafkaBroker:
    return KafkaBroker(
        libs_dir=settings.cache_dir / "kafka" / "libs",
        data_dir=settings.state_dir / "kafka",
        port=settings.kafka_port,
        controller_port=settings.kafka_controller_port,
        heap=settings.kafka_heap,
        metrics_port=settings.kafka_metrics_port,
        agent=jmx_agent(settings.cache_dir),
    )


def create_topics(settings: Settings, timeout_s: float = 60.0) -> None:
    """Create the topics, retrying while the broker finishes electing its controller."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            bus.ensure_topics(settings)
            return
        except Exception as e:
            if time.monotonic() > deadline:
                raise StackError(f"creating topics failed: {e}") from e
            time.sleep(1)


def components(settings: Settings) -> list[ComponentSpec]:
    broker = broker_for(settings)
    stack_settings = settings.model_copy(update={"kafka_bootstrap": broker.bootstrap})
    return [
        ComponentSpec(
            name="kafka",
            argv=broker.argv(),
            order=10,
            endpoint=broker.bootstrap,
            health=broker.healthy,
            ports=(broker.port, broker.controller_port,
                   *((broker.metrics_port,) if broker.metrics else ())),
            start_timeout_s=90,
            prepare=broker.format_storage,
            after_start=lambda: create_topics(stack_settings),
            metrics=broker.metrics,
        ),
        lag_exporter(settings, broker),
    ]


def lag_exporter(settings: Settings, broker: KafkaBroker) -> ComponentSpec:
    """Consumer-group lag on /metrics (driftloop.monitoring.kafka_lag)."""
    lag = f"127.0.0.1:{settings.kafka_lag_port}"
    return ComponentSpec(
        name="kafka-lag",
        argv=[sys.executable, "-m", "driftloop.monitoring.kafka_lag"],
        order=11,
        endpoint=f"http://{lag}/metrics",
        health=lambda: http_ok(f"http://{lag}/metrics", timeout_s=5.0),
        env={"DRIFTLOOP_KAFKA_BOOTSTRAP": broker.bootstrap,
             "DRIFTLOOP_KAFKA_LAG_PORT": str(settings.kafka_lag_port),
             "PYTHONUNBUFFERED": "1"},
        cwd=PROJECT_ROOT,
        ports=(settings.kafka_lag_port,),
        start_timeout_s=30,
        metrics=lag,
    )
