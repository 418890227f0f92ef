"""Frames between a model server and its child processes (the payload writer, the shadow).

A frame is a 4-byte big-endian header length, the header (JSON), an 8-byte data length and
the data. A tensor travels as its C-order bytes with ``dtype`` and ``shape`` in the header;
media bytes as they are. Both children read frames from stdin until it closes (their
parent stopped or died): a frame cut short reads as the end.
"""

from __future__ import annotations

import json
import struct
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["frame_head", "read_frame", "tensor_of"]

_LEN4 = struct.Struct(">I")
_LEN8 = struct.Struct(">Q")


def frame_head(header: dict[str, Any], data_len: int) -> bytes:
    """Everything of a frame before its data (written separately: no copy of large data)."""
    raw = json.dumps(header).encode()
    return _LEN4.pack(len(raw)) + raw + _LEN8.pack(data_len)


def _read_exact(stream: IO[bytes], n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def read_frame(stream: IO[bytes]) -> tuple[dict[str, Any], bytes] | None:
    """The next frame's header and data; None at the end of the stream."""
    head_len = _read_exact(stream, 4)
    if head_len is None:
        return None
    raw = _read_exact(stream, _LEN4.unpack(head_len)[0])
    size = _read_exact(stream, 8) if raw is not None else None
    if raw is None or size is None:
        return None
    data = _read_exact(stream, _LEN8.unpack(size)[0])
    if data is None:
        return None
    head = json.loads(raw or b"{}")
    return (head if isinstance(head, dict) else {}), data


def tensor_of(head: dict[str, Any], data: bytes) -> np.ndarray | None:
    """The tensor a frame carries (``dtype`` and ``shape`` in its header), else None."""
    if "dtype" not in head:
        return None
    import numpy as np

    return np.frombuffer(data, dtype=np.dtype(head["dtype"])).reshape(
        [int(s) for s in head["shape"]]
    )
