"""Payload logging as configured: which inputs are kept (mode, sample share, size), that a
full queue or a failing store drops and counts instead of failing, and retention."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from driftloop.blob import FileStore
from driftloop.errors import ValidationFailed
from driftloop.inputlog import (
    InputLogging,
    decode_tensor,
    expire_inputs,
    input_digest,
    input_key,
    key_time,
)
from driftloop.policy import parse_policy
from driftloop.serving.payloads import LoggingPolicies, PayloadLogger

PNG = b"\x89PNG\r\n\x1a\n" + b"x" * 100
NOW = datetime(2026, 12, 2, 10, 30, tzinfo=UTC)


def sample(reg: CollectorRegistry, name: str, **labels: str) -> float:
    return reg.get_sample_value(name, labels) or 0.0


def logger(store: object, reg: CollectorRegistry, **kw: object) -> PayloadLogger:
    return PayloadLogger(lambda: store, registry=reg, clock=lambda: NOW, **kw)  # type: ignore[arg-type, return-value]


def test_all_inputs_are_kept_under_their_content_key(tmp_path: Path) -> None:
    store, reg = FileStore(tmp_path), CollectorRegistry()
    pl = logger(store, reg)
    tensor = np.arange(64, dtype=np.float32).reshape(1, 64)
    k1 = pl.offer("digits", "p1", InputLogging(), media=PNG)
    k2 = pl.offer("digits", "p2", InputLogging(), tensor=tensor)
    assert pl.flush()
    assert k1 == f"inputs/model=digits/date=2026-12-02/hour=10/{input_digest(PNG, None)[0]}.png"
    assert k2 is not None and k2.endswith(".npy")
    assert store.get(k1) == PNG
    assert np.array_equal(decode_tensor(store.get(k2)), tensor)
    assert key_time(k1) == datetime(2026, 12, 2, 10, tzinfo=UTC)
    assert sample(reg, "driftloop_input_logs_written_total", model="digits") == 2
    pl.close()


def test_sampled_share_and_none(tmp_path: Path) -> None:
    store, reg = FileStore(tmp_path), CollectorRegistry()
    pl = logger(store, reg)
    cfg = InputLogging(mode="sample", sample_share=0.25)
    kept = [pl.offer("digits", f"id-{i}", cfg, media=PNG) for i in range(2000)]
    share = sum(k is not None for k in kept) / len(kept)
    assert 0.21 < share < 0.29
    # the same id is kept or not alike (a retried request)
    assert [pl.offer("digits", f"id-{i}", cfg, media=PNG) is not None for i in range(50)] == [
        k is not None for k in kept[:50]
    ]
    assert sample(reg, "driftloop_input_logs_skipped_total", model="digits") > 1400
    assert pl.offer("digits", "x", InputLogging(mode="none"), media=PNG) is None
    pl.close()


def test_an_input_over_the_size_limit_is_not_kept_and_is_counted(tmp_path: Path) -> None:
    store, reg = FileStore(tmp_path), CollectorRegistry()
    pl = logger(store, reg)
    cfg = InputLogging(max_bytes=50)
    assert pl.offer("digits", "big", cfg, media=PNG) is None
    assert pl.offer("digits", "t", cfg, tensor=np.zeros(64, dtype=np.float32)) is None
    assert pl.offer("digits", "small", cfg, media=PNG[:40]) is not None
    assert (
        sample(reg, "driftloop_input_logs_dropped_total", model="digits", reason="too_large") == 2
    )
    assert pl.flush()
    assert len(list(store.list("inputs/"))) == 1
    pl.close()


class BlockedStore(FileStore):
    """A store whose writes wait until released (a slow or hung S3 server)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.release = threading.Event()

    def put(self, key: str, data: bytes) -> None:
        self.release.wait(30)
        super().put(key, data)


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    store, reg = BlockedStore(tmp_path), CollectorRegistry()
    pl = logger(store, reg, maxsize=5)
    refs = [pl.offer("digits", f"q-{i}", InputLogging(), media=PNG + bytes([i])) for i in range(20)]
    # one in the writer's hands, five queued, the rest dropped and counted
    assert 5 <= sum(r is not None for r in refs) <= 6
    dropped = sample(reg, "driftloop_input_logs_dropped_total", model="digits", reason="queue_full")
    assert dropped == 20 - sum(r is not None for r in refs)
    store.release.set()
    assert pl.flush()
    assert sorted(store.list("inputs/")) == sorted(r for r in refs if r is not None)
    pl.close()


class DownStore(FileStore):
    def put(self, key: str, data: bytes) -> None:
        raise ConnectionError("S3 is down")


def test_a_failing_store_is_counted_and_never_raises(tmp_path: Path) -> None:
    reg = CollectorRegistry()
    pl = logger(DownStore(tmp_path), reg)
    assert pl.offer("digits", "a", InputLogging(), media=PNG) is not None
    assert pl.flush()
    assert (
        sample(reg, "driftloop_input_logs_dropped_total", model="digits", reason="store_error") == 1
    )
    pl.close()

    def broken() -> FileStore:
        raise RuntimeError("no credentials")

    reg2 = CollectorRegistry()
    pl2 = PayloadLogger(broken, registry=reg2)
    pl2.offer("digits", "b", InputLogging(), media=PNG)
    assert pl2.flush()
    assert (
        sample(reg2, "driftloop_input_logs_dropped_total", model="digits", reason="store_error")
        == 1
    )
    pl2.close()


def test_retention_deletes_expired_and_unlabeled_inputs(tmp_path: Path) -> None:
    store = FileStore(tmp_path)

    def put(hours_ago: float, name: str) -> str:
        key = input_key(
            "digits", NOW - timedelta(hours=hours_ago), input_digest(name.encode(), None)[0], "bin"
        )
        store.put(key, b"x")
        return key

    old = put(24 * 31, "old")
    labeled_old = put(24 * 31, "labeled-old")
    recent = put(1, "recent")
    day_old = put(30, "day-old")
    labeled = put(30, "labeled")
    store.put("inputs/model=digits/notes.txt", b"not an input")
    store.put(input_key("ocr", NOW - timedelta(days=40), "0" * 64, "png"), b"other model")

    plain = InputLogging(retention_days=30)
    r = expire_inputs(store, "digits", plain, now=NOW, referenced=[labeled_old])
    assert (r.deleted_expired, r.deleted_unlabeled) == (2, 0)
    assert not store.exists(old) and not store.exists(labeled_old)
    assert store.exists(recent) and store.exists(day_old) and store.exists(labeled)

    only = InputLogging(retention_days=30, only_with_feedback=True, feedback_window_hours=24)
    r = expire_inputs(store, "digits", only, now=NOW, referenced=[labeled])
    assert (r.deleted_expired, r.deleted_unlabeled, r.kept) == (0, 1, 2)
    assert not store.exists(day_old)
    assert store.exists(recent) and store.exists(labeled)
    assert store.exists("inputs/model=digits/notes.txt")
    assert len(list(store.list("inputs/model=ocr/"))) == 1


def test_the_policy_section_and_the_models_without_a_policy(tmp_path: Path) -> None:
    p = parse_policy(
        {
            "model": "digits",
            "inputs": {
                "mode": "sample",
                "sample_share": 0.5,
                "max_bytes": 1000,
                "retention_days": 7,
                "only_with_feedback": True,
            },
        }
    )
    assert p.inputs.mode == "sample" and p.inputs.retention_days == 7
    assert parse_policy({"model": "digits"}).inputs.mode == "all"
    with pytest.raises(ValidationFailed) as e:
        parse_policy({"model": "digits", "inputs": {"mode": "some", "keep": 1, "sample_share": 2}})
    names = {f.field for f in e.value.fields}
    assert {"policy.inputs.mode", "policy.inputs.keep", "policy.inputs.sample_share"} <= names
    (tmp_path / "digits.yaml").write_text("model: digits\ninputs:\n  mode: none\n")
    policies = LoggingPolicies(tmp_path)
    assert policies.for_model("digits").mode == "none"
    assert policies.for_model("ocr").mode == "none"  # no policy: nothing kept
    (tmp_path / "ocr.yaml").write_text("model: ocr\n")
    assert policies.for_model("ocr").mode == "all"
    # a broken policy keeps nothing (and never raises into the inference)
    (tmp_path / "ocr.yaml").write_text("model: ocr\ninputs: {mode: sometimes}\n")
    assert policies.for_model("ocr").mode == "none"
    (tmp_path / "ocr.yaml").write_text("model: [\n")
    assert policies.for_model("ocr").mode == "none"


def test_the_join_carries_a_kept_inputs_ref_into_the_labeled_record() -> None:
    from driftloop import events
    from flink.transforms import join

    ref = input_key("digits", NOW, "c" * 64, "npy")
    p = events.new_event(
        events.PREDICTION,
        "driftloop/serving/digits",
        {"model": "digits", "version": "1", "output": {"label": 3}, "input_ref": ref},
        id="p1",
    )
    f = events.new_event(
        events.FEEDBACK, "app", {"prediction_id": "p1", "model": "digits", "truth": 3}, id="f1"
    )
    cfg = join.JoinConfig(window_ms=1000)
    state, _, _ = join.on_record(
        join.empty_state(), join.PREDICTION, join.parse_side(join.PREDICTION, p)[1], 0, cfg
    )
    _, out, _ = join.on_record(state, join.FEEDBACK, join.parse_side(join.FEEDBACK, f)[1], 1, cfg)
    [lab] = out
    assert lab.event is not None and lab.event.data["input_ref"] == ref


def writer_env(blob_url: str, tmp_path: Path) -> dict[str, str]:
    import os
    import sys

    from driftloop.serving import payload_writer
    from driftloop.settings import Settings

    root = str(Path(__file__).resolve().parents[2])
    settings = Settings(blob_url=blob_url, state_dir=tmp_path)
    return payload_writer.writer_env(
        settings,
        {
            "PATH": str(Path(sys.executable).parent) + ":" + os.environ.get("PATH", ""),
            "PYTHONPATH": root,
            "HOME": os.environ.get("HOME", "/tmp"),
        },
    )


def test_the_writer_process_keeps_media_and_tensors(tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    reg = CollectorRegistry()
    pl = PayloadLogger(
        writer_env=writer_env(blobs.as_uri(), tmp_path), registry=reg, clock=lambda: NOW
    )
    tensor = np.arange(12, dtype=np.int16).reshape(3, 4)
    k1 = pl.offer("digits", "p1", InputLogging(), media=PNG)
    k2 = pl.offer("digits", "p2", InputLogging(), tensor=tensor)
    assert k1 is not None and k2 is not None
    assert pl.flush(60)
    store = FileStore(blobs)
    assert store.get(k1) == PNG
    got = decode_tensor(store.get(k2))
    assert got.dtype == tensor.dtype and np.array_equal(got, tensor)
    assert sample(reg, "driftloop_input_logs_written_total", model="digits") == 2
    pl.close()


def test_a_writer_process_that_cannot_write_is_counted(tmp_path: Path) -> None:
    reg = CollectorRegistry()
    # a store the child cannot open: it exits, and what it was handed is counted as lost
    pl = PayloadLogger(writer_env=writer_env("gopher://nowhere/x", tmp_path), registry=reg)
    for i in range(3):
        assert pl.offer("digits", f"p{i}", InputLogging(), media=PNG + bytes([i])) is not None
    assert pl.flush(60)
    import time

    deadline = time.monotonic() + 30
    while (
        time.monotonic() < deadline
        and sample(reg, "driftloop_input_logs_dropped_total", model="digits", reason="store_error")
        < 3
    ):
        time.sleep(0.1)
    assert (
        sample(reg, "driftloop_input_logs_dropped_total", model="digits", reason="store_error") == 3
    )
    assert sample(reg, "driftloop_input_logs_written_total", model="digits") == 0
    # a child that keeps dying is restarted with a backoff, not once per input
    for i in range(50):
        pl.offer("digits", f"q{i}", InputLogging(), media=PNG + bytes([i]))
        time.sleep(0.01)
    assert pl.flush(60)
    deadline = time.monotonic() + 30
    while (
        time.monotonic() < deadline
        and sample(reg, "driftloop_input_logs_dropped_total", model="digits", reason="store_error")
        < 53
    ):
        time.sleep(0.1)
    assert (
        sample(reg, "driftloop_input_logs_dropped_total", model="digits", reason="store_error")
        == 53
    )
    assert pl._writer is not None and pl._writer.starts <= 4
    pl.close()
