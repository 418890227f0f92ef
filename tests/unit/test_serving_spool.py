"""The prediction-event spool: records read back whole, a torn last frame (a kill mid-write)
is ignored, a live process's segments are never taken, a dead one's unacknowledged records
are replayed and acknowledged segments are deleted."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from driftloop import events
from driftloop.events.kafka import KafkaRecord, from_kafka, to_kafka
from driftloop.serving.emitter import PredictionEmitter
from driftloop.serving.spool import (
    ACK_SUFFIX,
    SUFFIX,
    Spool,
    SpoolFull,
    decode,
    encode,
    read_acks,
    read_frames,
)

TOPIC = "driftloop.predictions"


@functools.cache
def _record(i: int) -> KafkaRecord:
    event = events.new_event(events.PREDICTION, "driftloop/serving/digits",
                             {"model": "digits", "i": i, "bin": "\u00e9\x00"}, id=f"p-{i}")
    return to_kafka(event, "digits")


def _segments(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"*{SUFFIX}"))


def test_frames_read_back_as_the_record_send_event_sends() -> None:
    records = [_record(i) for i in range(3)] + [KafkaRecord(None, None, [("h", b"\xff\x00")])]
    data = b"".join(encode(TOPIC, r) for r in records)
    spans = read_frames(data)
    assert len(spans) == len(records)
    for (offset, length), record in zip(spans, records, strict=True):
        topic, back = decode(data[offset + 8:offset + length])
        assert (topic, back) == (TOPIC, record)
    event = from_kafka(records[0].value, records[0].headers)
    assert event.id == "p-0" and event.data["bin"] == "\u00e9\x00"


@pytest.mark.parametrize("cut", [1, 5, 8, 9, 30, -1])
def test_a_torn_last_frame_reads_as_the_end(cut: int) -> None:
    whole = encode(TOPIC, _record(0)) + encode(TOPIC, _record(1))
    last = encode(TOPIC, _record(2))
    spans = read_frames(whole + last[:cut])
    assert len(spans) == 2
    assert decode(whole[spans[1][0] + 8:])[1] == _record(1)


def test_a_corrupt_frame_ends_the_segment_and_a_torn_ack_is_ignored() -> None:
    first, second = encode(TOPIC, _record(0)), bytearray(encode(TOPIC, _record(1)))
    second[-1] ^= 0xFF
    assert len(read_frames(first + bytes(second) + encode(TOPIC, _record(2)))) == 1
    assert read_acks(b"\x00\x00\x00\x02\x00\x00\x00\x05\x00\x00") == {2, 5}


def test_acknowledged_segments_are_deleted_and_rotation_bounds_them(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_records=3)
    refs = [spool.append(TOPIC, _record(i)) for i in range(7)]
    assert len(_segments(tmp_path)) == 3 and spool.depth() == 7
    for ref in refs[:3]:
        spool.ack(ref)
    assert len(_segments(tmp_path)) == 2  # the first, all acknowledged, is gone
    for ref in refs[3:]:
        spool.ack(ref)
    assert spool.depth() == 0
    assert len(_segments(tmp_path)) == 1  # the one still written to
    spool.close()
    assert list(tmp_path.iterdir()) == []


def test_a_spool_at_its_limit_refuses_to_append(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=3 * len(encode(TOPIC, _record(0))))
    for i in range(3):
        spool.append(TOPIC, _record(i))
    with pytest.raises(SpoolFull):
        spool.append(TOPIC, _record(3))
    spool.close()


def test_a_live_owners_segments_are_never_adopted(tmp_path: Path) -> None:
    owner = Spool(tmp_path)
    owner.append(TOPIC, _record(0))
    other = Spool(tmp_path)  # flock: another open file description, as another process
    assert other.adopt() == 0 and other.depth() == 0
    owner.close()  # released with an unacknowledged record: the next owner replays it
    assert other.adopt() == 1
    assert [r for _, _, r in other.backlog(10)] == [_record(0)]
    other.close()


KILLED = textwrap.dedent("""
    import os, signal, sys
    from driftloop import events
    from driftloop.events.kafka import to_kafka
    from driftloop.serving.spool import Spool, encode
    spool = Spool(__import__("pathlib").Path(sys.argv[1]), segment_records=4)
    refs = [spool.append("driftloop.predictions", to_kafka(events.new_event(
        events.PREDICTION, "s", {"i": i}, id=f"p-{i}"), "digits")) for i in range(10)]
    for r in refs[:5]:
        spool.ack(r)  # the first segment goes; one record of the second is acknowledged
    seg = refs[-1].segment
    # A kill mid-write: half a frame at the end of the active segment, half an ack.
    frame = encode("driftloop.predictions", to_kafka(events.new_event(
        events.PREDICTION, "s", {"i": 10}, id="p-10"), "digits"))
    os.write(seg.fd, frame[: len(frame) // 2])
    with open(refs[5].segment.ack_path, "ab") as f:
        f.write(b"\\x00\\x00")
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_killed_process_leaves_its_unacknowledged_records_for_the_next(
        tmp_path: Path) -> None:
    child = subprocess.run([sys.executable, "-c", KILLED, str(tmp_path)], check=False,
                           capture_output=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    assert len(_segments(tmp_path)) == 2
    spool = Spool(tmp_path)
    assert spool.adopt() == 5  # p-5..p-9; p-4 acknowledged, the torn p-10 never answered
    backlog = spool.backlog(100)
    ids = [from_kafka(r.value, r.headers).id for _, _, r in backlog]
    assert ids == [f"p-{i}" for i in range(5, 10)]
    again = Spool(tmp_path)
    assert again.adopt() == 0  # this process holds them now
    for ref, _, _ in backlog[:3]:
        spool.ack(ref)
    assert len(_segments(tmp_path)) == 1  # p-4..p-7 all acknowledged: deleted
    spool.close()  # p-8, p-9 unacknowledged: left, with their acknowledgements
    third = Spool(tmp_path)
    assert third.adopt() == 2
    for ref, _, _ in third.backlog(10):
        third.ack(ref)
    assert list(tmp_path.iterdir()) == []
    third.close()
    again.close()


def test_an_orphan_ack_file_is_removed(tmp_path: Path) -> None:
    (tmp_path / f"1-2-3{ACK_SUFFIX}").write_bytes(b"\x00\x00\x00\x00")
    assert Spool(tmp_path).adopt() == 0
    assert list(tmp_path.iterdir()) == []


class _Future:
    def __init__(self, ok: bool) -> None:
        self.ok = ok

    def add_callback(self, fn: Any) -> _Future:
        if self.ok:
            fn(None)
        return self

    def add_errback(self, fn: Any) -> _Future:
        if not self.ok:
            fn(RuntimeError("broker said no"))
        return self


class _Producer:
    """Kafka reduced to what the emitter calls: every record acknowledged at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, KafkaRecord]] = []

    def send(self, topic: str, *, key: bytes | None, value: bytes | None,
             headers: list[tuple[str, bytes]]) -> _Future:
        self.sent.append((topic, KafkaRecord(key, value, headers)))
        return _Future(True)

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


def _unreachable() -> Any:
    raise OSError("Kafka at 127.0.0.1:1 unavailable")


def test_what_the_queue_cannot_take_is_sent_from_the_spool_and_a_restart_replays(
        tmp_path: Path) -> None:
    down_metrics = CollectorRegistry()
    down = PredictionEmitter(_unreachable, maxsize=2, registry=down_metrics,
                             spool=Spool(tmp_path))
    offered = [events.new_event(events.PREDICTION, "s", {"i": i}, id=f"p-{i}")
               for i in range(20)]
    assert all(down.offer(e, key="digits") for e in offered)
    assert down_metrics.get_sample_value("driftloop_prediction_spool_records") == 20
    assert down_metrics.get_sample_value("driftloop_prediction_spool_errors_total") == 0
    down.close(timeout_s=0.5)  # Kafka never came: all 20 stay on disk
    producer = _Producer()
    registry = CollectorRegistry()
    up = PredictionEmitter(lambda: producer, registry=registry, spool=Spool(tmp_path))
    up.offer(events.new_event(events.PREDICTION, "s", {"i": 20}, id="p-20"), key="digits")
    up.close(timeout_s=30)  # a deadline for a stuck run, not a speed threshold
    ids = sorted(from_kafka(r.value, r.headers).id for _, r in producer.sent)
    assert ids == sorted(f"p-{i}" for i in range(21))
    assert {t for t, _ in producer.sent} == {TOPIC}
    assert registry.get_sample_value("driftloop_prediction_events_sent_total") == 21
    assert list(tmp_path.iterdir()) == []


def test_a_spool_that_cannot_be_written_is_counted_and_inference_goes_on(
        tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    producer = _Producer()
    registry = CollectorRegistry()
    emitter = PredictionEmitter(lambda: producer, registry=registry,
                                spool=Spool(blocked / "spool"))
    assert emitter.offer(events.new_event(events.PREDICTION, "s", {}, id="p-0"))
    emitter.close(timeout_s=30)
    assert registry.get_sample_value("driftloop_prediction_spool_errors_total") == 1
    assert len(producer.sent) == 1
    assert os.path.isfile(blocked)
