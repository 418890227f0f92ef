"""send_input's claim check: above the threshold the bytes go to the blob store first and
the event carries only ``dataref``; at or below it they stay inline."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftloop import events as ev
from driftloop import topics
from driftloop.blob import open_store
from driftloop.client.inputs import InputSender
from driftloop.errors import PayloadTooLarge
from driftloop.settings import Settings


def sender(tmp_path: Path, threshold: int) -> InputSender:
    s = Settings(blob_url=(tmp_path / "blobs").as_uri(), raw_input_dataref_bytes=threshold,
                 flink_max_input_bytes=4096)
    return InputSender("tests/app", s)


def test_an_input_above_the_threshold_travels_by_reference(tmp_path: Path) -> None:
    s = sender(tmp_path, 100)
    body = b"RIFF" + bytes(range(256)) * 4
    topic, event = s.event("speech", body, content_type="audio/wav", id="in-1")
    assert topic == topics.raw("audio")
    assert event.data is None and event.datacontenttype == "audio/wav"
    ref = event.extensions[ev.DATAREF]
    store = open_store(s.settings.resolved_blob_url, s.settings)  # type: ignore[union-attr]
    assert ref.startswith(store.url + "/raw/model=speech/date=")
    assert store.get(ref[len(store.url) + 1:]) == body  # written before the event exists
    rec = ev.to_kafka(event)
    assert rec.value is None and len(dict(rec.headers)["ce_dataref"]) < 200


def test_the_same_bytes_get_the_same_key(tmp_path: Path) -> None:
    s = sender(tmp_path, 10)
    _, a = s.event("ocr", b"\x89PNG" + b"x" * 50, content_type="image/png", id="a")
    _, b = s.event("ocr", b"\x89PNG" + b"x" * 50, content_type="image/png", id="b")
    assert a.extensions[ev.DATAREF] == b.extensions[ev.DATAREF]


def test_an_input_at_the_threshold_stays_inline(tmp_path: Path) -> None:
    s = sender(tmp_path, 100)
    _, event = s.event("speech", b"r" * 100, content_type="audio/wav", id="in-2")
    assert event.data == b"r" * 100 and ev.DATAREF not in event.extensions
    assert not (tmp_path / "blobs" / "raw").exists()


def test_zero_threshold_sends_everything_inline(tmp_path: Path) -> None:
    s = sender(tmp_path, 0)
    _, event = s.event("speech", b"r" * 3000, content_type="audio/wav", id="in-3")
    assert event.data == b"r" * 3000


def test_by_reference_the_limit_is_preprocess_input_limit(tmp_path: Path) -> None:
    s = sender(tmp_path, 100)
    with pytest.raises(PayloadTooLarge) as info:
        s.event("speech", b"r" * 5000, content_type="audio/wav", id="in-4")
    assert info.value.fields[0].field == "data"
    assert not (tmp_path / "blobs" / "raw").exists()
