"""Hostile inputs against the real MLServer (the session's): each costs a 4xx naming the
problem (or a 504 at the model's time limit), the server stays up, and its memory stays
within ``serving_memory_limit_mb``, measured on the process (peak RSS, VmHWM)."""

from __future__ import annotations

import io
import select
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from driftloop.serving import v2
from driftloop.serving.models import digits
from tests.fixtures.serving import LINES, render_text_png

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------- inputs


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height`` black pixels: kilobytes on the wire,
    ``width * height`` pixels (bytes, once converted) when decoded."""
    row = b"\x00" * (1 + (width + 7) // 8)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))


def wav(*, rate: int, data_bytes: int, payload: bytes, channels: int = 1) -> bytes:
    """A 16-bit PCM WAV whose header declares ``data_bytes`` but carries ``payload``."""
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2 % 2**32,
                      channels * 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", data_bytes) + payload
    return b"RIFF" + struct.pack("<I", min(len(body) + data_bytes, 0xFFFFFFFF)) + body


def tone_wav() -> bytes:
    import numpy as np

    return wav(rate=16_000, data_bytes=32_000,
               payload=(np.sin(np.arange(16_000) / 5) * 8000).astype("<i2").tobytes())


def dense_text_png(width: int = 1800, height: int = 1800) -> bytes:
    """A page of small random words: tesseract reads it for minutes."""
    import random

    from PIL import Image, ImageDraw, ImageFont

    rnd = random.Random(7)
    words = ["lorem", "ipsum", "dolor", "amet", "9f3k", "x7q", "drift", "loop", "serve"]
    img = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=9)
    for y in range(0, height, 10):
        draw.text((0, y), " ".join(rnd.choice(words) for _ in range(200)), font=font, fill=0)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def peak_rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process in MiB, from /proc."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def post(mlserver, model: str, body: object, **kw) -> httpx.Response:
    return httpx.post(f"{mlserver.url}/v2/models/{model}/infer", json=body, timeout=120, **kw)


def assert_alive(mlserver, pid: int) -> None:
    assert mlserver.process.pid == pid and mlserver.process._proc.poll() is None
    x = digits.load_dataset().X[:1].tolist()
    with mlserver.client() as c:
        assert c.infer_tensor("digits", x).output["label"] == 0


def assert_memory_bounded(mlserver) -> None:
    rss, peak = peak_rss_mb(mlserver.process.pid)
    limit = mlserver.settings.serving_memory_limit_mb
    print(f"MLServer RSS {rss:.0f} MiB, peak {peak:.0f} MiB (limit {limit} MiB)")
    assert peak <= limit, f"peak RSS {peak:.0f} MiB over serving_memory_limit_mb {limit}"


# --------------------------------------------------------------------------- media

_PNG = render_text_png(LINES[0])
_TRUNCATED_JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" \
    b"\xff\xdb\x00C\x00" + b"\x08" * 30

MEDIA = [
    # (id, model, file bytes, status, words the error names)
    ("decompression-bomb", "faces", lambda: bomb_png(20_000, 20_000), 413, "pixels"),
    ("bomb-under-pillow-guard", "digits", lambda: bomb_png(8_000, 6_000), 413,
     "limit of 40000000 pixels"),
    ("wider-than-32767", "faces", lambda: bomb_png(40_000, 16), 413, "32767 pixels a side"),
    ("ocr-over-its-pixels", "ocr", lambda: bomb_png(2_500, 2_000), 413,
     "limit of 4000000 pixels"),
    ("wav-claims-gigabytes", "speech",
     lambda: wav(rate=16_000, data_bytes=0xFFFFFF00, payload=b"\x00\x01" * 2000), 413,
     "over the limit of 30 s"),
    ("wav-4000037-hz", "speech",
     lambda: wav(rate=4_000_037, data_bytes=3000, payload=b"\x01\x00" * 1500), 400,
     "sample rate 4000037 hz is outside 1000-192000 hz"),
    ("wav-30000-channels", "speech",
     lambda: wav(rate=16_000, channels=30_000, data_bytes=60_000, payload=b"\x00" * 500), 400,
     "channels"),
    ("truncated-png", "ocr", lambda: _PNG[: len(_PNG) // 2], 400, "not a readable image/png"),
    ("truncated-jpeg", "faces", lambda: _TRUNCATED_JPEG, 400, "not a readable image/jpeg"),
    ("truncated-wav", "speech", lambda: tone_wav()[:30], 400, "wav"),
    ("wav-to-an-image-model", "ocr", tone_wav, 415, "png or jpeg"),
    ("png-to-speech", "speech", lambda: _PNG, 400, "wav file or pcm"),
    ("empty-file", "faces", lambda: b"", 400, "empty"),
]


@pytest.mark.parametrize(("model", "make", "status", "needle"),
                         [m[1:] for m in MEDIA], ids=[m[0] for m in MEDIA])
def test_hostile_media_is_a_4xx_naming_the_problem(mlserver, model, make, status, needle):
    pid = mlserver.process.pid
    r = post(mlserver, model, v2.media_request(make()))
    assert r.status_code == status, r.text
    assert needle in r.json()["error"].lower()
    assert_alive(mlserver, pid)


def test_driftloop_predict_names_the_problem_in_one_line(mlserver, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    cli = str(Path(sys.executable).parent / "driftloop")
    env = {**os.environ, **mlserver.env()}
    cases = [
        ("bomb.png", "faces", bomb_png(20_000, 20_000), "pixels"),
        ("rate.wav", "speech", wav(rate=4_000_037, data_bytes=3000, payload=b"\x01\x00" * 1500),
         "sample rate"),
        ("cut.png", "ocr", _PNG[: len(_PNG) // 2], "not a readable image/png"),
        ("empty.wav", "speech", b"", "not a wav, png or jpeg"),
        ("wav-for-faces.wav", "faces", tone_wav(), "png or jpeg"),
    ]
    for name, model, data, needle in cases:
        path = tmp_path / name
        path.write_bytes(data)
        r = subprocess.run([cli, "predict", "--model", model, str(path)], env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, (name, r.stdout, r.stderr)
        assert needle in r.stderr.lower() and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


# --------------------------------------------------------------------------- bodies


def test_bodies_that_are_not_a_v2_request_are_4xx(mlserver):
    url = f"{mlserver.url}/v2/models/digits/infer"
    deep = b"[" * 10_000 + b"]" * 10_000
    tensor = b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1], "data": %s}]}'
    for content in (b"", b"not json", b"[1, 2]", b'{"inputs": "x"}', b"{" * 100_000,
                    b'{"inputs": ' + deep + b"}", tensor % deep, tensor % b"[1e400]",
                    tensor % (b"[1" + b"0" * 5000 + b"]")):
        r = httpx.post(url, content=content, headers={"content-type": "application/json"},
                       timeout=60)
        assert 400 <= r.status_code < 500, (content[:20], r.status_code, r.text[:200])
    # a file posted as such is the binary path; declared as what it is not, a 415
    r = httpx.post(url, content=_PNG, headers={"content-type": "image/png"}, timeout=60)
    assert r.status_code == 200 and r.json()["model_name"] == "digits", r.text[:200]
    r = httpx.post(url, content=_PNG, headers={"content-type": "audio/wav"}, timeout=60)
    assert r.status_code == 415 and "content-type" in r.text, r.text[:200]
    r = httpx.post(url, content=_PNG, headers={"content-type": "text/html"}, timeout=60)
    assert r.status_code == 415, r.text[:200]
    assert_alive(mlserver, mlserver.process.pid)


BAD_IDS = {"crlf": "two\r\nset-cookie: x=1", "nul": "nul\x00byte",
           "non-latin-1": "caf\u00e9-\u4e2d", "100kb": "x" * 100_000, "space": "with space"}


@pytest.mark.parametrize("bad_id", list(BAD_IDS.values()), ids=list(BAD_IDS))
def test_a_body_id_that_cannot_be_echoed_is_400(mlserver, bad_id):
    body = v2.tensor_request(digits.load_dataset().X[:1].tolist())
    body["id"] = bad_id
    r = post(mlserver, "digits", body)
    assert r.status_code == 400, r.text
    assert "printable ascii" in r.json()["error"].lower()
    assert len(r.content) < 2000
    assert all(bad_id[:20] not in v for v in r.headers.values())
    assert_alive(mlserver, mlserver.process.pid)


def test_a_request_id_header_over_256_characters_is_400(mlserver):
    body = v2.tensor_request(digits.load_dataset().X[:1].tolist(), request_id="fine-id")
    r = post(mlserver, "digits", body, headers={"x-request-id": "h" * 300})
    assert r.status_code == 400 and "x-request-id" in r.json()["error"]


TENSORS = [
    ("uint8-minus-one", "digits", {"datatype": "UINT8", "shape": [1, 64], "data": [-1] * 64},
     "outside uint8's range"),
    ("int8-300", "digits", {"datatype": "INT8", "shape": [1, 64], "data": [300] * 64},
     "outside int8's range"),
    ("ocr-one-channel", "ocr", {"datatype": "UINT8", "shape": [20, 20, 1],
                                "data": [255] * 400}, "hxwxc with c 3 or 4"),
    ("ocr-five-channels", "ocr", {"datatype": "UINT8", "shape": [20, 20, 5],
                                  "data": [255] * 2000}, "hxwxc with c 3 or 4"),
    ("faces-wider-than-32767", "faces", {"datatype": "UINT8", "shape": [8, 40_000],
                                         "data": [0] * 320_000}, "32767 pixels a side"),
    ("fp32-overflow", "digits", {"datatype": "FP32", "shape": [1, 64], "data": [1e39] * 64},
     "outside fp32's range"),
]


@pytest.mark.parametrize(("model", "tensor", "needle"), [t[1:] for t in TENSORS],
                         ids=[t[0] for t in TENSORS])
def test_tensors_out_of_range_or_shape_are_4xx(mlserver, model, tensor, needle):
    r = post(mlserver, model, {"inputs": [{"name": "input", **tensor}]})
    assert 400 <= r.status_code < 500, r.text
    assert needle in r.json()["error"].lower()


def _raw_request(mlserver, head: bytes, chunks=()) -> tuple[int, bytes, int]:
    """Send a request by hand: (status, body, bytes of ``chunks`` sent before the answer)."""
    port = mlserver.settings.serving_http_port
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(head)
        sent = 0
        answer = b""
        for chunk in chunks:
            if select.select([s], [], [], 0)[0]:
                break  # the server answered
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        while not _complete(answer):
            data = s.recv(65536)
            if not data:
                break
            answer += data
    head_part, _, body = answer.partition(b"\r\n\r\n")
    return int(head_part.split(b" ", 2)[1]), body, sent


def _complete(answer: bytes) -> bool:
    """True when a response's head and its Content-Length of body have arrived."""
    head_part, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head_part.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def test_oversize_bodies_are_refused_before_parsing(mlserver):
    pid = mlserver.process.pid
    limit = mlserver.settings.serving_max_request_bytes
    # 120 MB announced: refused on the header alone
    status, body, _ = _raw_request(mlserver, (
        b"POST /v2/models/digits/infer HTTP/1.1\r\nhost: x\r\n"
        b"content-type: application/json\r\ncontent-length: 120000000\r\n\r\n"))
    assert status == 413 and b"over the limit" in body
    # 120 MB streamed without a length: refused once the limit is passed
    piece = b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1], "data": [' \
        + b"1," * 500_000
    chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
    status, body, sent = _raw_request(
        mlserver, b"POST /v2/models/digits/infer HTTP/1.1\r\nhost: x\r\n"
        b"content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        [chunk] * (120_000_000 // len(piece)))
    assert status == 413 and b"streamed body" in body
    assert sent < 4 * limit
    # a 120 MB body really sent with its length: 413, and memory stays bounded
    big = b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1], "data": [' \
        + b"1," * 60_000_000 + b"1]}]}"
    try:
        r = httpx.post(f"{mlserver.url}/v2/models/digits/infer", content=big,
                       headers={"content-type": "application/json"}, timeout=120)
        assert r.status_code == 413
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
        pass  # the server answered 413 and closed while the client was still sending
    del big
    # 300 MB of JSON in 300 KB of gzip: inflated only up to the limit
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb = z.compress(b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1], '
                      b'"data": [')
    bomb += b"".join(z.compress(b"1," * 500_000) for _ in range(300)) + z.compress(b"1]}]}")
    bomb += z.flush()
    assert len(bomb) < limit
    r = httpx.post(f"{mlserver.url}/v2/models/digits/infer", content=bomb, timeout=120,
                   headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert r.status_code == 413 and "inflated gzip body" in r.json()["error"]
    assert_alive(mlserver, pid)
    assert_memory_bounded(mlserver)


def test_unknown_models_add_no_metrics_series(mlserver):
    names = [f"nope-{i}" for i in range(20)] + ["x%0Aevil", "nul%00"]
    for name in names:
        r = httpx.post(f"{mlserver.url}/v2/models/{name}/infer",
                       json=v2.tensor_request([1.0]), timeout=30)
        assert r.status_code == 404
    for version in ("999", "1%0A", "x" * 200):
        r = httpx.post(f"{mlserver.url}/v2/models/digits/versions/{version}/infer",
                       json=v2.tensor_request([1.0]), timeout=30)
        assert r.status_code == 404
    text = httpx.get(mlserver.process.metrics_url, timeout=30).text
    assert "nope-" not in text and "evil" not in text and 'version="999"' not in text
    assert "xxxxxxxx" not in text and 'model="nul' not in text


# --------------------------------------------------------------------------- time


def test_slow_ocr_hits_its_time_limit_and_starves_no_other_model(mlserver):
    """A dense page keeps tesseract busy for minutes: each OCR request ends at the OCR
    time limit (504), and digits answers meanwhile although OCR requests outnumber the
    worker threads a shared pool would have."""
    page = v2.media_request(dense_text_png())
    timeout = mlserver.settings.serving_timeout_for("ocr")
    done: list[float] = []
    lock = threading.Lock()

    def ocr() -> httpx.Response:
        r = httpx.post(f"{mlserver.url}/v2/models/ocr/infer", json=page, timeout=300)
        with lock:
            done.append(time.monotonic())
        return r

    x = digits.load_dataset().X[:1].tolist()
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(ocr) for _ in range(8)]
        time.sleep(1.0)  # the OCR requests are in
        with mlserver.client() as c:
            pred = c.infer_tensor("digits", x)
        answered_at = time.monotonic()
        results = [f.result() for f in futures]
    assert pred.output["label"] == 0
    assert answered_at < min(done), "digits waited for an OCR request to end"
    for r in results:
        assert r.status_code == 504, r.text
        assert f"limit of {timeout:g} s" in r.json()["error"]
    # tesseract runs with the same limit: no page keeps one running after it
    deadline = time.monotonic() + timeout + 60
    while children(mlserver.process.pid, "tesseract") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert children(mlserver.process.pid, "tesseract") == []
    assert_alive(mlserver, mlserver.process.pid)


def children(pid: int, name: str) -> list[int]:
    """Pids of running child processes of ``pid`` called ``name``."""
    import os

    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if comm == name and int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def test_after_every_hostile_request_memory_is_within_the_limit(mlserver):
    assert_alive(mlserver, mlserver.process.pid)
    assert_memory_bounded(mlserver)
