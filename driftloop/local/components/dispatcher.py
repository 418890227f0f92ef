"""The local dispatcher in the stack: starts last, once the functions it delivers to are up."""

from __future__ import annotations

import json
import sys
import time

from driftloop.local.components import ComponentSpec
from driftloop.local.components.kafka import bootstrap_for
from driftloop.local.eventing.endpoints import heartbeat_path
from driftloop.local.eventing.manifests import load_eventing
from driftloop.settings import Settings

ORDER = 60
HEARTBEAT_STALE_S = 10.0


def _healthy(settings: Settings) -> bool:
    """The dispatcher rewrites its heartbeat every second; ``failed`` lists the routes that
    fail right now (they retry on their own, the dispatcher stays up)."""
    try:
        beat = json.loads(heartbeat_path(settings.state_dir).read_text())
    except (FileNotFoundError, ValueError):
        return False
    return (
        not beat.get("failed") and time.time() - float(beat.get("updated", 0)) < HEARTBEAT_STALE_S
    )


def components(settings: Settings) -> list[ComponentSpec]:
    if not settings.eventing_dir.is_dir():
        return []
    eventing = load_eventing(settings.eventing_dir)

    def clear_heartbeat() -> None:
        heartbeat_path(settings.state_dir).unlink(missing_ok=True)

    return [
        ComponentSpec(
            name="dispatcher",
            argv=[
                sys.executable,
                "-m",
                "driftloop.local.eventing",
                "--eventing",
                str(settings.eventing_dir),
            ],
            order=ORDER,
            endpoint=str(heartbeat_path(settings.state_dir)),
            health=lambda: _healthy(settings),
            env={
                "DRIFTLOOP_STATE_DIR": str(settings.state_dir),
                "DRIFTLOOP_KAFKA_BOOTSTRAP": bootstrap_for(settings),
                "DRIFTLOOP_DISPATCHER_METRICS_PORT": str(settings.dispatcher_metrics_port),
            },
            ports=(settings.dispatcher_metrics_port,) if settings.dispatcher_metrics_port else (),
            start_timeout_s=30,
            prepare=clear_heartbeat,
            metrics=(f"127.0.0.1:{settings.dispatcher_metrics_port}"
                     if settings.dispatcher_metrics_port else ""),
            extra={
                "routes": [f"{'/'.join(r.topics)} → {r.sink}" for r in eventing.routes],
                "pings": [f"{p.schedule} → {p.sink}" for p in eventing.pings],
            },
        )
    ]
