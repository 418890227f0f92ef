"""Archive v0's memory of what it wrote is the blob store itself (a file:// store here):
a redelivered event is recognised whatever its time, even one dated before the window of
partitions the archive reads up front."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import pytest

from driftloop import events, topics
from driftloop.archive import Archiver
from driftloop.blob import open_store
from driftloop.settings import Settings


class Rec(NamedTuple):
    topic: str
    value: bytes | None
    headers: list[tuple[str, bytes]]
    key: bytes | None
    partition: int
    offset: int
    timestamp: int


def record(event: events.Event, offset: int) -> Rec:
    k = events.to_kafka(event)
    return Rec(topics.FEEDBACK, k.value, k.headers, k.key, 0, offset, 0)


class NoDeadLetters:
    def send(self, *a: Any, **kw: Any) -> Any:
        raise AssertionError("nothing here is a dead letter")


def archived_ids(store: Any) -> list[str]:
    out = []
    for key in store.list("feedback/"):
        out.extend(line for line in store.get(key).decode().splitlines() if line.strip())
    return out


@pytest.mark.parametrize("age_days", [0, 3, 400, 365 * 30])
def test_a_redelivered_event_is_archived_once_whatever_its_time(tmp_path, age_days):
    settings = Settings(archive_dedup_days=7)
    store = open_store(tmp_path.as_uri(), settings)
    when = datetime.now(UTC) - timedelta(days=age_days)
    e = events.new_event(events.FEEDBACK, "app-a", {"prediction_id": "p1", "model": "digits",
                                                    "truth": 1}, id="fb-1", time=when)
    first = Archiver(settings, store, group_id="g1")
    first.process([record(e, 0)], NoDeadLetters())  # type: ignore[arg-type]
    # A new archive (a new consumer group re-reading the topic) over the same store.
    second = Archiver(settings, store, group_id="g2")
    second.process([record(e, 0)], NoDeadLetters())  # type: ignore[arg-type]
    assert (first.written, second.written, second.duplicates) == (1, 0, 1)
    assert len(archived_ids(store)) == 1
