"""The Kafka broker of the local stack, with the DESIGN.md topics created once it is up."""

from __future__ import annotations

import time

from driftloop import bus
from driftloop.errors import StackError
from driftloop.local.components import ComponentSpec
from driftloop.local.kafka import KafkaBroker
from driftloop.settings import Settings


def broker_for(settings: Settings) -> KafkaBroker:
    return KafkaBroker(
        libs_dir=settings.cache_dir / "kafka" / "libs",
        data_dir=settings.state_dir / "kafka",
        port=settings.kafka_port,
        controller_port=settings.kafka_controller_port,
        heap=settings.kafka_heap,
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
            ports=(broker.port, broker.controller_port),
            start_timeout_s=90,
            prepare=broker.format_storage,
            after_start=lambda: create_topics(stack_settings),
        )
    ]
