"""The fault matrix injects a fault only once the loop keeps up with its load: a fault on a
job still catching up would count the catching up as recovery."""

from __future__ import annotations

from bench.chaos import keeps_up, new_input_after


def test_keeps_up_needs_every_recent_event_labeled_and_enough_of_them() -> None:
    recent = [("chaos/4/r", str(i)) for i in range(12)]
    assert keeps_up(recent, set(recent) | {("chaos/4/r", "old")})
    assert not keeps_up(recent, recent[1:])  # one recent event not labeled yet
    assert not keeps_up(recent[:3], recent)  # too few events to tell
    # identity is (source, id): the same id of another fault's source does not count
    assert not keeps_up(recent, [("chaos/3/r", i) for _, i in recent])


def test_new_input_counts_only_events_sent_after_the_fault() -> None:
    before, after = ("chaos/4/r", "1"), ("chaos/4/r", "2")
    # The restored checkpoint's commit labels an earlier event first: not new input. And
    # identity is (source, id): another fault's event with the same id does not count.
    labeled_at = {before: 105.0, after: 121.0, ("chaos/3/r", "2"): 110.0}
    assert new_input_after(100.0, [after], labeled_at) == 21.0
    assert new_input_after(100.0, [("chaos/4/r", "3")], labeled_at) is None  # none labeled
