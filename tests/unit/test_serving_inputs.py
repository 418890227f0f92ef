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
