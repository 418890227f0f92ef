"""Inputs by reference (claim check): preprocess reads a ``dataref`` from the blob store,
only from it, and dead-letters what it cannot read with the reason and the reference."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from driftloop import events as ev
from driftloop.blob import FileStore
from flink.transforms import Rejected
from flink.transforms.dataref import BlobRefs, BlobWrites, dataref_for
from flink.transforms.records import PreprocessConfig, preprocess_event, process_kafka_record

CFG = PreprocessConfig()


def clip(rate: int = 44100, seconds: float = 1.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    buf = io.BytesIO()
    wavfile.write(buf, rate, (0.3 * np.sin(2 * np.pi * 330 * t) * 32767).astype(np.int16))
    return buf.getvalue()


def by_ref(ref: str, id_: str = "r1") -> ev.Event:
    return ev.new_event(
        ev.INPUT,
        "tests/app",
        None,
        id=id_,
        datacontenttype="audio/wav",
        model="speech",
        **{ev.DATAREF: ref},
    )


def refs_to(store: FileStore, max_bytes: int = 8 << 20) -> BlobRefs:
    return BlobRefs(lambda: store, max_bytes=max_bytes, backoff_s=0.0)


def outcome(event: ev.Event, refs: BlobRefs | None) -> tuple[str | None, dict[str, bytes]]:
    rec = ev.to_kafka(event, key="speech")
    out = process_kafka_record(
        rec.value,
        rec.headers,
        modality="audio",
        source_topic="raw",
        output_topic="out",
        deadletter_topic="dl",
        cfg=CFG,
        partition=0,
        offset=7,
        resolve=refs,
    )
    return out.reason, dict(out.headers)


def test_a_referenced_input_preprocesses_like_the_same_bytes_inline(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "blobs")
    body = clip()
    store.put("raw/model=speech/a.wav", body)
    ref = dataref_for(store.url, "raw/model=speech/a.wav")
    inline = ev.new_event(
        ev.INPUT, "tests/app", body, id="r1", datacontenttype="audio/wav", model="speech"
    )
    a = preprocess_event(by_ref(ref), "audio", CFG, resolve=refs_to(store))
    b = preprocess_event(inline, "audio", CFG)
    assert a.id == "r1"
    assert a.data == b.data
    assert ev.DATAREF not in a.extensions


def test_a_referenced_input_travels_as_a_short_kafka_record(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "blobs")
    store.put("k.wav", clip())
    rec = ev.to_kafka(by_ref(dataref_for(store.url, "k.wav")))
    assert rec.value is None
    assert dict(rec.headers)["ce_dataref"] == f"{store.url}/k.wav".encode()
    reason, _ = outcome(by_ref(dataref_for(store.url, "k.wav")), refs_to(store))
    assert reason is None


def test_inline_data_wins_over_a_reference(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "blobs")
    event = ev.new_event(
        ev.INPUT,
        "tests/app",
        clip(),
        id="r2",
        datacontenttype="audio/wav",
        model="speech",
        **{ev.DATAREF: f"{store.url}/missing.wav"},
    )
    assert preprocess_event(event, "audio", CFG, resolve=refs_to(store)).id == "r2"


@pytest.mark.parametrize(
    "ref",
    [
        "file:///etc/passwd",
        "s3://another-bucket/x.wav",
        "{store}-sibling/x.wav",  # a folder whose name merely starts like the store's
        "{store}/../outside.wav",
        "{store}/a//b.wav",
        "{store}/",
    ],
)
def test_a_reference_outside_the_blob_store_is_refused(tmp_path: Path, ref: str) -> None:
    store = FileStore(tmp_path / "blobs")
    (tmp_path / "outside.wav").write_bytes(clip())
    (tmp_path / "blobs-sibling").mkdir()
    (tmp_path / "blobs-sibling" / "x.wav").write_bytes(clip())
    reason, headers = outcome(by_ref(ref.format(store=store.url)), refs_to(store))
    assert reason == Rejected.INVALID_EVENT
    assert headers["dl_reason"].decode().startswith("invalid_event: dataref")
    assert headers["ce_dataref"] == ref.format(store=store.url).encode()  # kept: replayable


def test_a_missing_blob_is_dead_lettered_with_its_reference(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "blobs")
    ref = dataref_for(store.url, "raw/gone.wav")
    reason, headers = outcome(by_ref(ref), refs_to(store))
    assert reason == Rejected.MISSING_BLOB
    assert headers["ce_dataref"] == ref.encode()
    assert headers["dl_source_offset"] == b"7"


def test_a_referenced_blob_over_the_input_limit_is_too_large(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "blobs")
    store.put("big.wav", clip(seconds=2.0))
    reason, _ = outcome(by_ref(dataref_for(store.url, "big.wav")), refs_to(store, max_bytes=1000))
    assert reason == Rejected.TOO_LARGE


class Unreachable:
    """A store whose server does not answer (pure-logic fake: the retry and the reason)."""

    url = "s3://bucket/lake"

    def __init__(self, fail: int) -> None:
        self.fail, self.calls = fail, 0

    def get(self, key: str) -> bytes:
        self.calls += 1
        if self.calls <= self.fail:
            raise ConnectionError("connection refused")
        return clip()


def test_an_unreachable_store_is_retried_then_dead_lettered() -> None:
    flaky = Unreachable(fail=2)
    refs = BlobRefs(lambda: flaky, max_bytes=8 << 20, attempts=3, backoff_s=0.0)
    assert refs("s3://bucket/lake/a.wav") == clip()
    assert flaky.calls == 3
    down = Unreachable(fail=10)
    refs = BlobRefs(lambda: down, max_bytes=8 << 20, attempts=3, backoff_s=0.0)
    reason, headers = outcome(by_ref("s3://bucket/lake/a.wav"), refs)
    assert reason == Rejected.BLOB_UNAVAILABLE
    assert down.calls == 3
    assert b"connection refused" in headers["dl_reason"]


def test_a_reference_without_a_store_is_refused() -> None:
    reason, _ = outcome(by_ref("file:///tmp/x.wav"), None)
    assert reason == Rejected.INVALID_EVENT


# The output side of the claim check: a preprocessed payload above the inline limit goes to
# the blob store from Python, and only a short record crosses back into the JVM and Kafka.


def preprocessed(
    store: FileStore | None, body: bytes, cfg: PreprocessConfig = CFG, source: str = "tests/app"
) -> tuple[ev.Event, int]:
    """The preprocessed event of an inline input, and its Kafka record's size."""
    writes = BlobWrites(lambda: store, backoff_s=0.0) if store is not None else None
    rec = ev.to_kafka(ev.new_event(ev.INPUT, source, body, id="o1",
                                   datacontenttype="audio/wav", model="speech"), key="speech")
    out = process_kafka_record(rec.value, rec.headers, modality="audio", source_topic="raw",
                               output_topic="out", deadletter_topic="dl", cfg=cfg,
                               offload=writes)
    assert out.reason is None, out.headers
    size = len(out.value or b"") + sum(len(k) + len(v) for k, v in out.headers)
    return ev.from_kafka(out.value, out.headers), size


def test_a_payload_over_the_inline_limit_travels_by_dataref(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "blobs")
    body = clip(seconds=2.0)  # 64 KB of 16 kHz WAV: 85 KB of base64
    by_ref_event, by_ref_size = preprocessed(store, body)
    inline_event, inline_size = preprocessed(None, body)
    p = by_ref_event.data["payload"]
    assert p["encoding"] == "blob" and "data" not in p
    assert by_ref_event.extensions[ev.DATAREF] == dataref_for(store.url, p["blob_key"])
    assert by_ref_size < 2048 < 80_000 < inline_size
    wav = base64.b64decode(inline_event.data["payload"]["data"])
    # a consumer follows the reference into the store, as preprocess follows an input's
    assert refs_to(store)(by_ref_event.extensions[ev.DATAREF]) == wav
    assert ev.DATAREF not in inline_event.extensions
    assert {k: v for k, v in by_ref_event.data.items() if k != "payload"} == {
        k: v for k, v in inline_event.data.items() if k != "payload"}


def test_two_sources_inputs_with_one_id_keep_their_own_blobs(tmp_path: Path) -> None:
    """Identity is (source, id): the same id from two apps must not share a payload blob."""
    store = FileStore(tmp_path / "blobs")
    a, _ = preprocessed(store, clip(seconds=2.0), source="app/a")
    b, _ = preprocessed(store, clip(seconds=2.5), source="app/b")
    assert a.data["payload"]["blob_key"] != b.data["payload"]["blob_key"]
    assert refs_to(store)(a.extensions[ev.DATAREF]) != refs_to(store)(b.extensions[ev.DATAREF])
    again, _ = preprocessed(store, clip(seconds=2.0), source="app/a")  # a replay
    assert again.data["payload"]["blob_key"] == a.data["payload"]["blob_key"]


def test_the_inline_limit_counts_the_payload_as_it_travels_in_base64(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "blobs")
    body = clip(rate=16000, seconds=1.0)  # 32 044 bytes of WAV out, 42 728 in base64
    small, _ = preprocessed(store, body, PreprocessConfig(inline_max_bytes=42_728))
    big, _ = preprocessed(store, body, PreprocessConfig(inline_max_bytes=40_000))
    assert small.data["payload"]["encoding"] == "base64"
    assert big.data["payload"]["encoding"] == "blob"
    assert big.data["payload"]["bytes"] == 32_044


def test_the_streaming_inference_reads_an_offloaded_payload(tmp_path: Path) -> None:
    from driftloop.serving.stream import parse_record

    store = FileStore(tmp_path / "blobs")
    event, _ = preprocessed(store, clip(seconds=2.0))
    inp = parse_record(event, store)
    assert inp.media == store.get(event.data["payload"]["blob_key"])
    assert inp.media[:4] == b"RIFF" and inp.input_ref == event.data["payload"]["blob_key"]


class Unwritable:
    """A store whose server does not answer writes (pure-logic fake: retry and reason)."""

    url = "s3://bucket/lake"

    def __init__(self, fail: int) -> None:
        self.fail, self.calls, self.stored = fail, 0, {}

    def put(self, key: str, data: bytes) -> None:
        self.calls += 1
        if self.calls <= self.fail:
            raise ConnectionError("connection refused")
        self.stored[key] = data


def test_an_unwritable_store_is_retried_then_the_input_dead_lettered() -> None:
    flaky = Unwritable(fail=2)
    assert BlobWrites(lambda: flaky, backoff_s=0.0)("k.wav", b"x") == "s3://bucket/lake"
    assert flaky.calls == 3 and flaky.stored == {"k.wav": b"x"}
    down = Unwritable(fail=10)
    rec = ev.to_kafka(ev.new_event(ev.INPUT, "tests/app", clip(seconds=2.0), id="o2",
                                   datacontenttype="audio/wav", model="speech"))
    out = process_kafka_record(rec.value, rec.headers, modality="audio", source_topic="raw",
                               output_topic="out", deadletter_topic="dl", cfg=CFG,
                               offload=BlobWrites(lambda: down, backoff_s=0.0))
    assert (out.topic, out.reason) == ("dl", Rejected.BLOB_UNAVAILABLE)
    assert down.calls == 3
    assert b"connection refused" in dict(out.headers)["dl_reason"]
