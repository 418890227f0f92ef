"""Run state shared by replicas on a file:// store: start claims, the history the policy
reads, and labels counted once (the same code runs on S3 in tests/app/test_retrain_replicas.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from driftloop.blob import open_store
from driftloop.retrain.state import Run, RunStore, Start, iso
from driftloop.settings import Settings

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.fixture
def runs(tmp_path: Path) -> RunStore:
    s = Settings(state_dir=tmp_path)
    return RunStore(open_store(s.resolved_blob_url, s))


def start(gen: int, run_id: str, at: datetime, event: str | None = None) -> Start:
    return Start(model="digits", generation=gen, run_id=run_id, requested_at=iso(at),
                 trigger="drift", event_key=event)


def test_one_claim_per_start_generation(runs: RunStore) -> None:
    assert runs.claim_start(start(1, "r-a", NOW, "src\x1fe1"))
    assert not runs.claim_start(start(1, "r-b", NOW, "src\x1fe2"))
    assert [s.run_id for s in runs.starts("digits")] == ["r-a"]
    assert runs.generation("digits") == 1
    # A claimed start without its run record yet is an active run, its event is seen.
    h = runs.history("digits", now=NOW + timedelta(seconds=5), timeout_s=900,
                     dedup_window_s=3600)
    assert h.active == 1 and h.generation == 1 and h.last_started == NOW
    assert h.seen_events == frozenset({"src\x1fe1"})
    # Past the timeout it no longer holds a slot; past the window its event is forgotten.
    later = runs.history("digits", now=NOW + timedelta(hours=2), timeout_s=900,
                         dedup_window_s=3600)
    assert later.active == 0 and later.seen_events == frozenset()


def test_failed_runs_start_the_cooldown_and_count_in_a_row(runs: RunStore) -> None:
    for i, status in enumerate(["succeeded", "failed", "failed"]):
        at = NOW + timedelta(minutes=i)
        assert runs.claim_start(start(i + 1, f"r{i}", at))
        runs.put(Run(model="digits", run_id=f"r{i}", status=status,  # type: ignore[arg-type]
                     requested_at=iso(at)))
    h = runs.history("digits", now=NOW + timedelta(minutes=5), timeout_s=900,
                     dedup_window_s=3600)
    assert h.last_started == NOW + timedelta(minutes=2)  # the failed run's start
    assert h.consecutive_failures == 2 and h.active == 0 and h.generation == 3


def test_labels_are_counted_once_per_source_and_id_exactly(runs: RunStore, tmp_path: Path) -> None:
    assert runs.count_label("digits", "app-a\x1ffb-1", 0)
    assert not runs.count_label("digits", "app-a\x1ffb-1", 0)  # a redelivery
    assert runs.count_label("digits", "app-b\x1ffb-1", 0)  # same id, other source
    assert runs.label_count("digits", 0) == 2
    # A crash between the two markers: the redelivery still counts once.
    runs.store.put_if_absent("runs/digits/labels/g0000000000/"
                             f"{runs._digest('app-c' + chr(31) + 'x')}.json", b"{}")
    assert not runs.count_label("digits", "app-c\x1fx", 0)
    assert runs.label_count("digits", 0) == 3
    # Another process (a restart, a replica) reads the same exact count.
    s = Settings(state_dir=tmp_path)
    assert RunStore(open_store(s.resolved_blob_url, s)).label_count("digits", 0) == 3
    # A new generation (a run started) counts from zero; old labels never count again.
    assert not runs.count_label("digits", "app-a\x1ffb-1", 1)
    assert runs.count_label("digits", "app-a\x1ffb-2", 1)
    assert runs.label_count("digits", 1) == 1
