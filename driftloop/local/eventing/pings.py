"""The PingSource worker: fires every ping on its schedule (no catch-up of missed ticks,
as in Knative); a tick that cannot be delivered is logged and lost, never the schedule."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from driftloop.local.eventing.delivery import Deliverer, Outcome, Stopped, delivery_token
from driftloop.local.eventing.manifests import Delivery, Ping
from driftloop.local.eventing.schedule import next_fire, ping_event

if TYPE_CHECKING:
    from driftloop.settings import Settings

__all__ = ["DEFAULT_PING_DELIVERY_RETRY", "PingWorker"]

log = logging.getLogger("driftloop.dispatcher")

DEFAULT_PING_DELIVERY_RETRY = 3


class PingWorker(threading.Thread):
    """Fires every PingSource on its schedule (no catch-up of missed ticks, as in Knative)."""

    def __init__(
        self,
        pings: Sequence[tuple[Ping, str]],
        stop: threading.Event,
        settings: Settings,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(name="pings", daemon=True)
        self.pings, self.stop, self.settings, self.now = pings, stop, settings, now
        self.fired: dict[str, int] = {p.name: 0 for p, _ in pings}

    def run(self) -> None:
        deliverer = Deliverer(
            self.stop, self.settings.dispatcher_timeout_s, token=delivery_token(self.settings)
        )
        delivery = Delivery(retry=DEFAULT_PING_DELIVERY_RETRY, backoff_delay_s=0.2)
        start = self.now()
        due = {p.name: next_fire(p.schedule, start, p.timezone) for p, _ in self.pings}
        try:
            while not self.stop.is_set() and self.pings:
                now = self.now()
                for ping, url in self.pings:
                    if due[ping.name] <= now:
                        headers, body = ping_event(ping, due[ping.name])
                        try:
                            outcome = deliverer.deliver(url, headers, body, delivery)
                        except Stopped:
                            raise
                        except Exception as e:  # one tick lost, never the schedule
                            outcome = Outcome(False, 1, None, f"{type(e).__name__}: {e}")
                        self.fired[ping.name] += 1
                        if not outcome.delivered:
                            log.warning(
                                "ping %s to %s failed: %s", ping.name, ping.sink, outcome.reason
                            )
                        due[ping.name] = next_fire(
                            ping.schedule, max(now, due[ping.name]), ping.timezone
                        )
                wait = min((d - self.now()).total_seconds() for d in due.values())
                self.stop.wait(max(0.01, min(wait, 1.0)))
        except Stopped:
            pass
        finally:
            deliverer.close()
