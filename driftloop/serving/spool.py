"""A write-ahead spool of prediction events: what the model server answered outlives its kill.

The spool is a folder of segment files (``<pid>-<time_ns>-<n>.seg``), each with a sidecar
of acknowledgements (``.ack``). A segment is a run of frames: a 4-byte big-endian body
length, the body's CRC-32 (4 bytes), the body. The body is one Kafka record as
``driftloop.bus.send_event`` sends it: ``pipe_frames.frame_head`` with the topic, key and
headers (bytes as latin-1 text) in its JSON header, then the record value. The sidecar
holds the 4-byte indexes of the segment's records Kafka acknowledged.

Appends are plain ``write`` calls (``fsync`` only when asked): a killed process leaves
what it wrote with the operating system; a machine crash can lose the last writes the OS
had not flushed to disk yet.

Ownership: a process holds an exclusive ``flock`` on every segment it wrote (created under
a hidden name, locked, then renamed, so no one sees it unlocked) until the segment is
deleted. A segment whose lock another process can take belongs to a dead process:
``adopt`` takes it over, hands its unacknowledged records to the new owner's sender and
deletes it once they are acknowledged. A torn last frame (a kill mid-write) or a torn
last acknowledgement reads as the end. Replay is at least once: a record Kafka took whose
acknowledgement the kill cut off is sent again.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from driftloop.events.kafka import KafkaRecord
from driftloop.pipe_frames import frame_head

if TYPE_CHECKING:
    from driftloop.settings import Settings

__all__ = ["SEGMENT_BYTES", "SEGMENT_RECORDS", "Ref", "Spool", "SpoolFull", "decode", "encode",
           "from_settings", "read_acks", "read_frames"]

log = logging.getLogger(__name__)

SEGMENT_BYTES = 4 * 1024 * 1024
"""A segment takes no more records once it holds this many bytes."""
SEGMENT_RECORDS = 10_000
"""... or this many records."""

_FRAME = struct.Struct(">II")  # body length, CRC-32 of the body
_HEAD4 = struct.Struct(">I")
_HEAD8 = struct.Struct(">Q")
_ACK = struct.Struct(">I")
SUFFIX, ACK_SUFFIX = ".seg", ".ack"


class SpoolFull(OSError):
    """The spool holds its maximum of unacknowledged bytes."""


def encode(topic: str, record: KafkaRecord) -> bytes:
    """One frame: length, CRC-32 and the record (topic, key, headers, value)."""
    head = {
        "topic": topic,
        "key": record.key.decode("latin-1") if record.key is not None else None,
        "headers": [[k, v.decode("latin-1")] for k, v in record.headers],
        "null": record.value is None,
    }
    value = record.value or b""
    body = frame_head(head, len(value)) + value
    return _FRAME.pack(len(body), zlib.crc32(body)) + body


def decode(body: bytes) -> tuple[str, KafkaRecord]:
    """A frame's body back to its topic and record."""
    (n,) = _HEAD4.unpack_from(body, 0)
    head: dict[str, Any] = json.loads(body[4:4 + n])
    (size,) = _HEAD8.unpack_from(body, 4 + n)
    value = body[12 + n:12 + n + size]
    key = head.get("key")
    return str(head["topic"]), KafkaRecord(
        key.encode("latin-1") if key is not None else None,
        None if head.get("null") else value,
        [(str(k), str(v).encode("latin-1")) for k, v in head.get("headers") or []],
    )


def read_frames(data: bytes) -> list[tuple[int, int]]:
    """The (offset, length) of each whole frame, in order; reading stops at the first frame
    cut short or failing its checksum (a kill mid-write leaves one at the end)."""
    spans: list[tuple[int, int]] = []
    pos = 0
    while pos + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, pos)
        end = pos + _FRAME.size + length
        if end > len(data) or zlib.crc32(data[pos + _FRAME.size:end]) != crc:
            break
        spans.append((pos, end - pos))
        pos = end
    return spans


def read_acks(data: bytes) -> set[int]:
    """The acknowledged indexes of a sidecar (a torn last entry is ignored)."""
    whole = len(data) - len(data) % _ACK.size
    return {i for (i,) in _ACK.iter_unpack(data[:whole])}


@dataclass(eq=False)
class Segment:
    """One segment file this process holds the lock of."""

    path: Path
    fd: int
    writable: bool
    spans: list[tuple[int, int]] = field(default_factory=list)
    acked: set[int] = field(default_factory=set)
    pending: set[int] = field(default_factory=set)
    """Records to send from disk: the queue could not take them, Kafka failed them, or a
    dead process left them."""
    ack_fd: int | None = None

    @property
    def size(self) -> int:
        return self.spans[-1][0] + self.spans[-1][1] if self.spans else 0

    @property
    def done(self) -> bool:
        return len(self.acked) >= len(self.spans)

    @property
    def ack_path(self) -> Path:
        return self.path.with_suffix(ACK_SUFFIX)


class Ref(NamedTuple):
    """Where a spooled record is: its segment and its index there."""

    segment: Segment
    position: int


def _lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


class Spool:
    """The segments of one process; every method is thread-safe and raises only ``OSError``
    (``append``) or nothing."""

    def __init__(self, folder: Path, *, segment_bytes: int = SEGMENT_BYTES,
                 segment_records: int = SEGMENT_RECORDS, max_bytes: int = 512 * 1024 * 1024,
                 fsync: bool = False) -> None:
        self.folder = folder
        self._segment_bytes, self._segment_records = segment_bytes, segment_records
        self._max_bytes, self._fsync = max_bytes, fsync
        self._lock = threading.Lock()
        self._segments: list[Segment] = []
        self._active: Segment | None = None
        self._serial = 0
        self._closed = False

    # -- writing ---------------------------------------------------------------------------

    def append(self, topic: str, record: KafkaRecord) -> Ref:
        """Write one record; ``OSError`` when it could not be (disk full, permission, full)."""
        frame = encode(topic, record)
        with self._lock:
            if self._closed:
                raise OSError("spool closed")
            seg = self._writable(len(frame))
            offset = seg.size
            written = os.write(seg.fd, frame)
            if written != len(frame):  # a short write (disk full): the frame reads as torn
                self._retire(seg)
                raise OSError(f"spool: short write ({written} of {len(frame)} bytes)")
            if self._fsync:
                os.fsync(seg.fd)
            seg.spans.append((offset, len(frame)))
            return Ref(seg, len(seg.spans) - 1)

    def _writable(self, need: int) -> Segment:
        seg = self._active
        if seg is not None and ((seg.size + need > self._segment_bytes and seg.spans)
                                or len(seg.spans) >= self._segment_records):
            self._retire(seg)
            seg = None
        if self._bytes() + need > self._max_bytes:
            raise SpoolFull(f"spool {self.folder} holds {self._max_bytes} bytes")
        if seg is None:
            seg = self._active = self._create()
            self._segments.append(seg)
        return seg

    def _create(self) -> Segment:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._serial += 1
        name = f"{os.getpid()}-{time.time_ns()}-{self._serial}{SUFFIX}"
        hidden = self.folder / f".{name}.new"
        fd = os.open(hidden, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # new file: no one else has it
            os.rename(hidden, self.folder / name)
        except OSError:
            os.close(fd)
            hidden.unlink(missing_ok=True)
            raise
        return Segment(self.folder / name, fd, writable=True)

    def _retire(self, seg: Segment) -> None:
        """No more appends to ``seg``; delete it when everything in it is acknowledged."""
        seg.writable = False
        if self._active is seg:
            self._active = None
        if seg.done:
            self._delete(seg)

    def _delete(self, seg: Segment) -> None:
        # The segment first: a kill between the two leaves an orphan sidecar (cleaned by
        # ``adopt``), never a segment without its acknowledgements.
        try:
            seg.path.unlink(missing_ok=True)
            seg.ack_path.unlink(missing_ok=True)
        except OSError as e:
            log.warning("prediction spool: cannot delete %s: %s", seg.path, e)
        for fd in (seg.ack_fd, seg.fd):
            if fd is not None:
                os.close(fd)
        seg.ack_fd = None
        if seg in self._segments:
            self._segments.remove(seg)

    def _bytes(self) -> int:
        return sum(s.size for s in self._segments)

    # -- the sender's side -----------------------------------------------------------------

    def ack(self, ref: Ref) -> None:
        """Kafka acknowledged the record: note it; delete its segment when all are."""
        seg, index = ref
        with self._lock:
            if self._closed or index in seg.acked or seg not in self._segments:
                return
            seg.acked.add(index)
            seg.pending.discard(index)
            try:
                if seg.ack_fd is None:
                    seg.ack_fd = os.open(seg.ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                                         0o600)
                os.write(seg.ack_fd, _ACK.pack(index))
            except OSError as e:  # a lost acknowledgement means a duplicate on replay
                log.warning("prediction spool: cannot record an acknowledgement: %s", e)
            if seg.done and not seg.writable:
                self._delete(seg)

    def defer(self, ref: Ref) -> None:
        """The record is to be sent from disk later (``backlog``)."""
        with self._lock:
            if ref.position not in ref.segment.acked:
                ref.segment.pending.add(ref.position)

    def backlog(self, limit: int) -> list[tuple[Ref, str, KafkaRecord]]:
        """Up to ``limit`` deferred records, read back from their segments (and no longer
        pending: ``defer`` them again if Kafka fails them)."""
        out: list[tuple[Ref, str, KafkaRecord]] = []
        with self._lock:
            for seg in list(self._segments):
                for index in sorted(seg.pending)[:limit - len(out)]:
                    seg.pending.discard(index)
                    offset, length = seg.spans[index]
                    try:
                        frame = os.pread(seg.fd, length, offset)
                        topic, record = decode(frame[_FRAME.size:])
                    except (OSError, ValueError, KeyError, struct.error) as e:
                        log.warning("prediction spool: unreadable record in %s: %s",
                                    seg.path, e)
                        continue
                    out.append((Ref(seg, index), topic, record))
                if len(out) >= limit:
                    break
        return out

    def has_backlog(self) -> bool:
        with self._lock:
            return any(s.pending for s in self._segments)

    def depth(self) -> int:
        """Records written and not yet acknowledged by Kafka."""
        with self._lock:
            return sum(len(s.spans) - len(s.acked) for s in self._segments)

    # -- dead processes' segments ------------------------------------------------------------

    def adopt(self) -> int:
        """Take over the segments of dead processes; returns how many records they left to
        send (now in the backlog). Segments locked by a live process are left alone."""
        if not self.folder.is_dir():
            return 0
        found = 0
        for path in sorted(self.folder.glob(f"*{SUFFIX}")):
            try:
                found += self._adopt_one(path)
            except OSError as e:
                log.warning("prediction spool: cannot replay %s: %s", path, e)
        for ack in self.folder.glob(f"*{ACK_SUFFIX}"):
            if not ack.with_suffix(SUFFIX).exists():
                ack.unlink(missing_ok=True)  # its segment was deleted, then the kill came
        return found

    def _adopt_one(self, path: Path) -> int:
        with self._lock:
            if self._closed or any(s.path == path for s in self._segments):
                return 0
        fd = os.open(path, os.O_RDWR)
        try:
            if not _lock(fd):
                os.close(fd)
                return 0  # its process is alive
            st = os.fstat(fd)
            try:
                same = os.stat(path).st_ino == st.st_ino
            except FileNotFoundError:
                same = False
            if not same:  # another process replayed and deleted it meanwhile
                os.close(fd)
                return 0
            data = os.pread(fd, st.st_size, 0)
        except OSError:
            os.close(fd)
            raise
        seg = Segment(path, fd, writable=False, spans=read_frames(data))
        if len(seg.spans) and seg.size < len(data):
            log.warning("prediction spool: %s ends with a torn frame (%d bytes), ignored",
                        path, len(data) - seg.size)
        ack_path = seg.ack_path
        if ack_path.exists():
            raw = ack_path.read_bytes()
            seg.acked = {i for i in read_acks(raw) if i < len(seg.spans)}
            whole = len(raw) - len(raw) % _ACK.size
            if whole != len(raw):
                os.truncate(ack_path, whole)  # our acknowledgements append after whole ones
        seg.pending = set(range(len(seg.spans))) - seg.acked
        with self._lock:
            self._segments.append(seg)
            if seg.done:
                self._delete(seg)
        return len(seg.pending)

    def close(self) -> None:
        """Delete what Kafka acknowledged; release the rest (the next process replays it)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._active is not None:
                self._active.writable = False
                self._active = None
            for seg in list(self._segments):
                if seg.done:
                    self._delete(seg)
                else:
                    for fd in (seg.ack_fd, seg.fd):
                        if fd is not None:
                            os.close(fd)
            self._segments.clear()


def from_settings(settings: Settings) -> Spool | None:
    """The model server's spool (``serving_spool*``), or None when it is off."""
    if not settings.serving_spool:
        return None
    folder = settings.serving_spool_dir or settings.state_dir / "serving" / "prediction-spool"
    return Spool(folder, max_bytes=settings.serving_spool_max_mb * 1024 * 1024,
                 fsync=settings.serving_spool_fsync)
