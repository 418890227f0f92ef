"""feedback-intake's replay window without Kafka: identity, expiry, bound, claims."""

from __future__ import annotations

import threading

from driftloop.events import new_event, to_kafka
from driftloop.intake_window import Claims, ReplayWindow, event_key, record_key


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_identity_is_source_and_id_never_the_id_alone() -> None:
    assert event_key("app-a", "e-1") == event_key("app-a", "e-1")
    assert event_key("app-a", "e-1") != event_key("app-b", "e-1")
    assert event_key("app-a", "e-1") != event_key("app-a", "e-2")
    # the pair is length-prefixed: moving characters between source and id changes it
    assert event_key("ab", "c") != event_key("a", "bc")


def test_record_key_reads_the_binary_mode_headers() -> None:
    e = new_event("io.driftloop.feedback.v1", "app-a", {"model": "digits"}, id="e-1")
    assert record_key(to_kafka(e, key="digits").headers) == event_key("app-a", "e-1")
    assert record_key([("ce_id", b"e-1")]) is None  # no source: not an event of intake's
    assert record_key(None) is None


def test_an_entry_leaves_when_its_time_is_out_of_the_window() -> None:
    clock = Clock()
    w = ReplayWindow(900, 100, clock=clock)
    k = event_key("app", "1")
    w.add(k)
    assert w.seen(k)
    clock.now += 899
    assert w.seen(k)
    clock.now += 2
    assert not w.seen(k)
    w.add(event_key("app", "2"))  # adding expires the old ones: memory follows the window
    assert len(w) == 1


def test_a_record_time_older_than_the_window_is_not_seen() -> None:
    clock = Clock()
    w = ReplayWindow(60, 100, clock=clock)
    w.add(event_key("app", "old"), at=clock.now - 61)
    assert not w.seen(event_key("app", "old"))
    w.add(event_key("app", "new"), at=clock.now - 59)
    assert w.seen(event_key("app", "new"))


def test_the_bound_drops_the_oldest_first() -> None:
    clock = Clock()
    w = ReplayWindow(900, 3, clock=clock)
    keys = [event_key("app", str(i)) for i in range(5)]
    for k in keys:
        w.add(k)
    assert len(w) == 3
    assert w.evicted == 2
    assert [w.seen(k) for k in keys] == [False, False, True, True, True]


def test_seeing_a_key_again_keeps_its_latest_time() -> None:
    clock = Clock()
    w = ReplayWindow(100, 10, clock=clock)
    k = event_key("app", "1")
    w.add(k)
    clock.now += 80
    w.add(k)
    clock.now += 80
    assert w.seen(k)


def test_a_second_claim_waits_for_the_first() -> None:
    claims = Claims()
    k = event_key("app", "1")
    assert claims.claim(k) is None  # owner
    other = claims.claim(k)
    assert other is not None and not other.is_set()
    waited = threading.Thread(target=other.wait)
    waited.start()
    claims.release(k)
    waited.join(timeout=10)
    assert other.is_set()
    assert claims.claim(k) is None  # free again
    assert claims.claim(event_key("other-app", "1")) is None  # another event entirely
