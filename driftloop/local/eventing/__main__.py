"""``python -m driftloop.local.eventing``: the dispatcher process of ``driftloop up``.

Reads the eventing manifests and the stack's endpoints, runs the dispatcher, serves its
metrics, and rewrites its heartbeat (plan, failing routes, route states) every second.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from driftloop.local.eventing.dispatcher import Dispatcher
from driftloop.local.eventing.endpoints import endpoint_url, endpoints_from_stack, heartbeat_path
from driftloop.local.eventing.manifests import load_eventing

__all__ = ["main"]

log = logging.getLogger("driftloop.dispatcher")


def main(argv: list[str] | None = None) -> int:
    from driftloop.settings import Settings

    parser = argparse.ArgumentParser(prog="python -m driftloop.local.eventing")
    parser.add_argument("--eventing", type=Path, default=None, help="eventing manifests folder")
    parser.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="sink name → URL (overrides stack.json)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings()
    endpoints = endpoints_from_stack(settings.state_dir)
    for item in args.endpoint:
        name, _, url = item.partition("=")
        endpoints[name] = endpoint_url(url)
    eventing = load_eventing(args.eventing or settings.eventing_dir)
    dispatcher = Dispatcher(eventing, endpoints, settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if settings.dispatcher_metrics_port:
        from prometheus_client import start_http_server

        try:
            start_http_server(
                settings.dispatcher_metrics_port,
                addr="127.0.0.1",
                registry=dispatcher.metrics.registry,
            )
        except OSError as e:  # deliveries matter more than the metrics; the log says why
            log.error("metrics port %d: %s", settings.dispatcher_metrics_port, e)
    dispatcher.start()
    beat = heartbeat_path(settings.state_dir)
    beat.parent.mkdir(parents=True, exist_ok=True)
    reported: list[str] = []
    try:
        while not stop.is_set():
            failed = dispatcher.failed()
            plan = dispatcher.plan() | {
                "skipped": dispatcher.skipped,
                "failed": failed,
                "route_states": dispatcher.states(),
                "updated": time.time(),
            }
            tmp = beat.with_suffix(".tmp")
            tmp.write_text(json.dumps(plan))
            tmp.replace(beat)
            if failed and failed != reported:  # routes retry on their own; the beat says so
                log.error("routes failing: %s", failed)
            reported = failed
            stop.wait(1.0)
    finally:
        dispatcher.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
