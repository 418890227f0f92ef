"""Decoding of model inputs: media sniffing, WAV to 16 kHz mono PCM, images to arrays.

Pure functions over bytes and arrays. Every failure is a ``BadRequest`` whose message
names the input and what is wrong, so the server answers 4xx instead of 500.
"""

from __future__ import annotations

import io
import wave
from typing import TYPE_CHECKING

from driftloop.errors import BadRequest, FieldError, PayloadTooLarge, UnsupportedMediaType

if TYPE_CHECKING:
    import numpy as np

SAMPLE_RATE = 16_000
WAV = "audio/wav"
PNG = "image/png"
JPEG = "image/jpeg"
MEDIA_TYPES: tuple[str, ...] = (WAV, PNG, JPEG)
MAX_IMAGE_PIXELS = 40_000_000


def sniff(data: bytes) -> str | None:
    """The media type the bytes start like, or None (WAV, PNG and JPEG are known)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return WAV
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return PNG
    if data[:3] == b"\xff\xd8\xff":
        return JPEG
    return None


def bad(field: str, rule: str, message: str) -> BadRequest:
    return BadRequest(f"{field}: {message}", fields=[FieldError(field, rule, message)])


def check_size(data: bytes, limit: int, *, field: str = "input") -> bytes:
    """Reject empty and oversize inputs before decoding anything."""
    if not data:
        raise bad(field, "non-empty", "input is empty")
    if len(data) > limit:
        raise PayloadTooLarge(
            f"{field}: {len(data)} bytes is over the limit of {limit} bytes",
            fields=[FieldError(field, "max-bytes", f"at most {limit} bytes")],
        )
    return data


def decode_wav(data: bytes, *, max_seconds: float) -> np.ndarray:
    """A WAV file as 16 kHz mono int16 samples (downmixed and resampled when needed)."""
    import numpy as np

    try:
        with wave.open(io.BytesIO(data)) as w:
            channels, width, rate, n = (w.getnchannels(), w.getsampwidth(), w.getframerate(),
                                        w.getnframes())
            frames = w.readframes(n)
    except (wave.Error, EOFError, ValueError) as e:
        raise bad("input", "wav", f"not a readable WAV file ({e})") from e
    if width not in (1, 2, 4) or channels < 1 or rate <= 0:
        raise bad("input", "wav", f"unsupported WAV format: {width * 8}-bit, {channels} ch")
    if n == 0 or not frames:
        raise bad("input", "non-empty", "WAV file holds no samples")
    if n / rate > max_seconds:
        raise PayloadTooLarge(
            f"input: {n / rate:.1f} s of audio is over the limit of {max_seconds:g} s",
            fields=[FieldError("input", "max-duration", f"at most {max_seconds:g} s")],
        )
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}[width]
    usable = len(frames) // (width * channels) * width * channels
    samples = np.frombuffer(frames[:usable], dtype=dtype).astype(np.float64)
    if width == 1:
        samples = (samples - 128.0) * 256.0
    elif width == 4:
        samples = samples / 65536.0
    samples = samples.reshape(-1, channels).mean(axis=1)
    return to_pcm16(resample(samples, rate))


def resample(samples: np.ndarray, rate: int) -> np.ndarray:
    """Resample to 16 kHz with a polyphase filter (identity at 16 kHz)."""
    if rate == SAMPLE_RATE:
        return samples
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(rate, SAMPLE_RATE)
    return resample_poly(samples, SAMPLE_RATE // g, rate // g)


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.clip(np.round(samples), -32768, 32767).astype(np.int16)


def pcm_from_tensor(values: np.ndarray, *, max_seconds: float) -> np.ndarray:
    """A 1-D tensor of 16 kHz samples (int16 range, or float in [-1, 1]) as int16 PCM."""
    import numpy as np

    arr = np.asarray(values)
    if arr.ndim != 1:
        raise bad("input", "shape", f"audio tensor must be 1-D samples, got shape {arr.shape}")
    if arr.size == 0:
        raise bad("input", "non-empty", "audio tensor is empty")
    if arr.size / SAMPLE_RATE > max_seconds:
        raise PayloadTooLarge(f"input: {arr.size / SAMPLE_RATE:.1f} s of audio is over the "
                              f"limit of {max_seconds:g} s")
    if not np.all(np.isfinite(arr)):
        raise bad("input", "finite", "audio tensor holds NaN or infinity")
    if arr.dtype.kind == "f" and np.max(np.abs(arr)) <= 1.0:
        arr = arr * 32767.0
    return to_pcm16(arr.astype(np.float64))


def decode_image(data: bytes, *, mode: str = "RGB") -> np.ndarray:
    """PNG or JPEG bytes as an array (``RGB``: HxWx3 uint8; ``L``: HxW uint8)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    kind = sniff(data)
    if kind not in (PNG, JPEG):
        raise UnsupportedMediaType(
            "input: expected a PNG or JPEG image",
            fields=[FieldError("input", "media-type", "must be image/png or image/jpeg")],
        )
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise PayloadTooLarge(f"input: {img.width}x{img.height} image is over the limit "
                                      f"of {MAX_IMAGE_PIXELS} pixels")
            img.load()
            return np.asarray(img.convert(mode))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise bad("input", "image", f"not a readable {kind} image ({e})") from e
