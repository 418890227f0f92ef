"""PingSource schedules: when a ping fires next, and the event it sends (pure).

Schedules are 5-field cron expressions in the source's time zone (as Knative's PingSource
reads them) or ``@every <n><unit>`` for short local intervals.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from driftloop import events as ev

__all__ = ["PingSpec", "ScheduleError", "next_fire", "ping_event"]


class PingSpec(Protocol):
    """What a ping's event is made of (``manifests.Ping`` has it; manifests imports this
    module, so naming ``Ping`` here would tie the two modules in a cycle)."""

    @property
    def source(self) -> str: ...

    @property
    def data(self) -> bytes: ...

    @property
    def content_type(self) -> str: ...


class ScheduleError(ValueError):
    """A PingSource schedule or time zone that cannot be read."""

    status = 422


_EVERY = re.compile(r"^@every\s+(?P<n>\d+(?:\.\d+)?)(?P<u>ms|s|m|h)$")


def next_fire(schedule: str, after: datetime, timezone: str = "UTC") -> datetime:
    """Next fire time strictly after ``after``: 5-field cron (in ``timezone``) or ``@every 10s``."""
    m = _EVERY.match(schedule.strip())
    if m:
        unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group("u")]
        return after + timedelta(seconds=float(m.group("n")) * unit)
    from croniter import croniter

    try:
        zone = ZoneInfo(timezone)
    except Exception as e:
        raise ScheduleError(f"PingSource timezone {timezone!r}: {e}") from e
    if not croniter.is_valid(schedule):
        raise ScheduleError(f"PingSource schedule {schedule!r} is not a valid cron expression")
    nxt: datetime = croniter(schedule, after.astimezone(zone)).get_next(datetime)
    return nxt.astimezone(UTC)


def ping_event(ping: PingSpec, when: datetime) -> tuple[dict[str, str], bytes]:
    """The binary-mode HTTP request a PingSource sends at ``when`` (a fresh id each time)."""
    event = ev.new_event(
        ev.PING, ping.source, ping.data, datacontenttype=ping.content_type, time=when
    )
    return ev.to_http_binary(event)
