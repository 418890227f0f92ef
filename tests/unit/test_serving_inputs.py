"""Media decoding: WAV to 16 kHz mono PCM, images, limits."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from driftloop.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from driftloop.serving import inputs


def wav_bytes(samples: np.ndarray, rate: int, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()


def test_stereo_8k_wav_becomes_16k_mono():
    t = np.arange(8000) / 8000
    tone = (np.sin(2 * np.pi * 440 * t) * 10000).astype(np.int16)
    stereo = np.stack([tone, tone], axis=1).reshape(-1)
    pcm = inputs.decode_wav(wav_bytes(stereo, 8000, channels=2), max_seconds=5)
    assert pcm.dtype == np.int16 and len(pcm) == 16000
    assert 6000 < np.abs(pcm).max() <= 10500


def test_wav_limits_and_corruption():
    with pytest.raises(PayloadTooLarge):
        inputs.decode_wav(wav_bytes(np.zeros(16000 * 3), 16000), max_seconds=2)
    with pytest.raises(BadRequest, match="WAV"):
        inputs.decode_wav(b"RIFF\x00\x00\x00\x00WAVEjunk", max_seconds=2)
    with pytest.raises(BadRequest, match="no samples"):
        inputs.decode_wav(wav_bytes(np.zeros(0), 16000), max_seconds=2)


def test_float_tensor_scales_to_pcm16():
    pcm = inputs.pcm_from_tensor(np.array([0.0, 0.5, -1.0]), max_seconds=1)
    assert pcm.tolist() == [0, 16384, -32767]
    with pytest.raises(BadRequest, match="1-D"):
        inputs.pcm_from_tensor(np.zeros((2, 2)), max_seconds=1)
    with pytest.raises(BadRequest, match="NaN"):
        inputs.pcm_from_tensor(np.array([np.nan]), max_seconds=1)


def test_sniff_and_images():
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 3), (10, 20, 30)).save(buf, "PNG")
    assert inputs.sniff(buf.getvalue()) == inputs.PNG
    assert inputs.decode_image(buf.getvalue(), mode="L").shape == (3, 4)
    with pytest.raises(UnsupportedMediaType):
        inputs.decode_image(b"GIF89a...")
    with pytest.raises(BadRequest, match="image"):
        inputs.decode_image(b"\xff\xd8\xff\xe0broken")
    with pytest.raises(BadRequest, match="empty"):
        inputs.check_size(b"", 10)


def wav_header(*, rate: int, channels: int = 1, width: int = 2, data_bytes: int,
               payload: bytes = b"") -> bytes:
    """A WAV whose header declares ``data_bytes`` of samples but carries only ``payload``."""
    import struct

    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * width % 2**32,
                      channels * width % 2**16, width * 8)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", data_bytes) + payload
    return b"RIFF" + struct.pack("<I", min(len(body) + data_bytes, 0xFFFFFFFF)) + body


def test_absurd_sample_rate_is_refused_before_resampling():
    # 3 KB declaring 4,000,037 Hz: resampling it to 16 kHz cost seconds and gigabytes.
    wav = wav_header(rate=4_000_037, data_bytes=3000, payload=b"\x01\x00" * 1500)
    with pytest.raises(BadRequest, match="sample rate 4000037 Hz is outside 1000-192000 Hz"):
        inputs.decode_wav(wav, max_seconds=60)
    with pytest.raises(BadRequest, match="sample rate"):
        inputs.decode_wav(wav_header(rate=200, data_bytes=400, payload=b"\x00" * 400),
                          max_seconds=60)
    # the bound is a setting
    with pytest.raises(BadRequest, match="outside 1000-48000 Hz"):
        inputs.decode_wav(wav_bytes(np.zeros(96), 96_000), max_seconds=60, max_rate=48_000)
    assert len(inputs.decode_wav(wav_bytes(np.zeros(9600), 96_000), max_seconds=60)) == 1600


def test_wav_header_claiming_gigabytes_is_413_without_reading():
    wav = wav_header(rate=16_000, data_bytes=0xFFFFFF00, payload=b"\x00\x00" * 100)
    with pytest.raises(PayloadTooLarge, match="over the limit of 60 s"):
        inputs.decode_wav(wav, max_seconds=60)


def test_wav_with_odd_channels_or_truncated_frames_is_400():
    with pytest.raises(BadRequest, match="channels"):
        inputs.decode_wav(wav_header(rate=16_000, channels=30_000, data_bytes=120_000,
                                     payload=b"\x00" * 1000), max_seconds=60)
    with pytest.raises(BadRequest, match="less than one frame"):
        inputs.decode_wav(wav_header(rate=16_000, channels=8, data_bytes=1600,
                                     payload=b"\x00" * 7), max_seconds=60)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR declaring ``width`` x ``height`` 1-bit pixels, then one
    tiny IDAT: what a decompression bomb looks like to a header check."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_images_are_bounded_by_side_and_pixels_before_decoding():
    with pytest.raises(PayloadTooLarge, match="32767 pixels a side"):
        inputs.decode_image(png_header_only(40_000, 1))
    with pytest.raises(PayloadTooLarge, match="over the limit of 40000000 pixels"):
        inputs.decode_image(png_header_only(30_000, 30_000))
    with pytest.raises(PayloadTooLarge, match="over the limit of 40000000 pixels"):
        inputs.decode_image(png_header_only(8_000, 6_000))
    with pytest.raises(PayloadTooLarge, match="over the limit of 100 pixels"):
        inputs.decode_image(png_header_only(20, 20), max_pixels=100)
    with pytest.raises(BadRequest, match="image"):  # truncated pixel data
        inputs.decode_image(png_header_only(200, 200))


def test_image_tensors_need_known_channels_and_sizes():
    assert inputs.image_tensor(np.full((4, 5, 3), 300.0)).max() == 255
    for shape in [(4, 5, 1), (4, 5, 5), (4,), (2, 2, 2, 3)]:
        with pytest.raises(BadRequest, match="HxW or HxWxC"):
            inputs.image_tensor(np.zeros(shape))
    with pytest.raises(PayloadTooLarge, match="a side"):
        inputs.image_tensor(np.zeros((1, 40_000), dtype=np.uint8))
    with pytest.raises(BadRequest, match="finite"):
        inputs.image_tensor(np.array([[np.nan, 1.0]]))


def test_limits_and_timeouts_come_from_settings():
    from pydantic import ValidationError

    from driftloop.settings import Settings

    s = Settings(serving_model_timeouts="ocr=20, speech=45.5", serving_max_sample_rate=48_000,
                 serving_ocr_max_pixels=1000)
    assert (s.serving_timeout_for("ocr"), s.serving_timeout_for("speech"),
            s.serving_timeout_for("digits")) == (20.0, 45.5, s.serving_inference_timeout_s)
    limits = inputs.InputLimits.from_settings(s, timeout_s=s.serving_timeout_for("ocr"))
    assert (limits.max_sample_rate, limits.ocr_max_pixels, limits.timeout_s) == (48_000, 1000,
                                                                                20.0)
    with pytest.raises(ValidationError):
        Settings(serving_model_timeouts="ocr=soon")
