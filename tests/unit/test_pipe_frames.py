"""Frames between a model server and its children: what is written reads back, a frame cut
short (the parent died mid-write) reads as the end, never as a wrong frame."""

from __future__ import annotations

import io

import numpy as np

from driftloop.pipe_frames import frame_head, read_frame, tensor_of


def _stream(*frames: tuple[dict[str, object], bytes]) -> bytes:
    return b"".join(frame_head(h, len(d)) + d for h, d in frames)


def test_media_and_tensors_read_back_in_order() -> None:
    tensor = np.arange(6, dtype=np.float32).reshape(2, 3)
    head = {"model": "digits", "key": "k", "dtype": tensor.dtype.str, "shape": [2, 3]}
    raw = _stream(({"pid": "p1"}, b"\x89PNG media"), (head, tensor.tobytes()), ({}, b""))
    stream = io.BytesIO(raw)
    first = read_frame(stream)
    assert first == ({"pid": "p1"}, b"\x89PNG media")
    assert tensor_of(*first) is None
    second = read_frame(stream)
    assert second is not None and second[0] == head
    got = tensor_of(*second)
    assert got is not None and got.dtype == np.float32
    np.testing.assert_array_equal(got, tensor)
    assert read_frame(stream) == ({}, b"")
    assert read_frame(stream) is None


def test_a_frame_cut_short_anywhere_is_the_end() -> None:
    raw = _stream(({"pid": "p1"}, b"0123456789"))
    for cut in range(len(raw)):
        assert read_frame(io.BytesIO(raw[:cut])) is None, cut
    assert read_frame(io.BytesIO(raw)) == ({"pid": "p1"}, b"0123456789")
