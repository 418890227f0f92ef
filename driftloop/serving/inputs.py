"""Decoding of model inputs: media sniffing, WAV to 16 kHz mono PCM, images to arrays.

Pure functions over bytes and arrays. Every failure is a ``BadRequest`` whose message
names the input and what is wrong, so the server answers 4xx instead of 500.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from typing import TYPE_CHECKING

from driftloop.errors import BadRequest, FieldError, PayloadTooLarge, UnsupportedMediaType

if TYPE_CHECKING:
    import numpy as np

    from driftloop.settings import Settings

SAMPLE_RATE = 16_000
WAV = "audio/wav"
PNG = "image/png"
JPEG = "image/jpeg"
MEDIA_TYPES: tuple[str, ...] = (WAV, PNG, JPEG)
MAX_IMAGE_PIXELS = 40_000_000
# Widest and tallest image any model takes: OpenCV and Leptonica (tesseract) index rows and
# columns with 16-bit signed integers in places, so larger sides fail deep inside them.
MAX_IMAGE_SIDE = 32_767
# Lowest sample rate that is audio; the highest is a setting (the resampler's filter grows
# with the rate's ratio to 16 kHz, so an absurd rate costs seconds and gigabytes).
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 192_000
MAX_CHANNELS = 16


@dataclass(frozen=True)
class InputLimits:
    """What one request may cost a model: checked before anything large is decoded."""

    max_audio_s: float = 60.0
    max_sample_rate: int = MAX_SAMPLE_RATE
    max_image_pixels: int = MAX_IMAGE_PIXELS
    ocr_max_pixels: int = 4_000_000
    timeout_s: float | None = None
    """Longest one inference may take (models that run a subprocess pass it on)."""

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout_s: float | None = None,
                      ) -> InputLimits:
        return cls(max_audio_s=settings.serving_max_audio_s,
                   max_sample_rate=settings.serving_max_sample_rate,
                   max_image_pixels=settings.serving_max_image_pixels,
                   ocr_max_pixels=settings.serving_ocr_max_pixels, timeout_s=timeout_s)


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


def decode_wav(data: bytes, *, max_seconds: float,
               max_rate: int = MAX_SAMPLE_RATE) -> np.ndarray:
    """A WAV file as 16 kHz mono int16 samples (downmixed and resampled when needed).

    The header (rate, channels, sample width, declared length) is checked before any
    sample is read or resampled.
    """
    import numpy as np

    try:
        with wave.open(io.BytesIO(data)) as w:
            channels, width, rate, n = (w.getnchannels(), w.getsampwidth(), w.getframerate(),
                                        w.getnframes())
            check_wav_header(channels, width, rate, n, max_seconds=max_seconds,
                             max_rate=max_rate)
            frames = w.readframes(n)
    except (wave.Error, EOFError, ValueError) as e:
        raise bad("input", "wav", f"not a readable WAV file ({e})") from e
    if not frames:
        raise bad("input", "non-empty", "WAV file holds no samples")
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}[width]
    usable = len(frames) // (width * channels) * width * channels
    if usable == 0:
        raise bad("input", "truncated", "WAV file holds less than one frame of samples")
    samples = np.frombuffer(frames[:usable], dtype=dtype).astype(np.float64)
    if width == 1:
        samples = (samples - 128.0) * 256.0
    elif width == 4:
        samples = samples / 65536.0
    samples = samples.reshape(-1, channels).mean(axis=1)
    return to_pcm16(resample(samples, rate))


def check_wav_header(channels: int, width: int, rate: int, n: int, *, max_seconds: float,
                     max_rate: int = MAX_SAMPLE_RATE) -> None:
    """Refuse a WAV by its header alone (``BadRequest``/``PayloadTooLarge`` naming the rule)."""
    if width not in (1, 2, 4) or not 1 <= channels <= MAX_CHANNELS:
        raise bad("input", "wav", f"unsupported WAV format: {width * 8}-bit, {channels} ch "
                  f"(8, 16 or 32-bit PCM, 1-{MAX_CHANNELS} channels)")
    if not MIN_SAMPLE_RATE <= rate <= max_rate:
        raise bad("input", "sample-rate", f"sample rate {rate} Hz is outside "
                  f"{MIN_SAMPLE_RATE}-{max_rate} Hz")
    if n == 0:
        raise bad("input", "non-empty", "WAV file holds no samples")
    if n / rate > max_seconds:
        raise PayloadTooLarge(
            f"input: {n / rate:.1f} s of audio is over the limit of {max_seconds:g} s",
            fields=[FieldError("input", "max-duration", f"at most {max_seconds:g} s")],
        )


def resample(samples: np.ndarray, rate: int) -> np.ndarray:
    """Resample to 16 kHz with a polyphase filter (identity at 16 kHz)."""
    if rate == SAMPLE_RATE:
        return samples
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(rate, SAMPLE_RATE)
    resampled: np.ndarray = resample_poly(samples, SAMPLE_RATE // g, rate // g)
    return resampled


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


def check_image_size(width: int, height: int, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """Refuse an image by its dimensions alone (413 naming the limit)."""
    if width < 1 or height < 1:
        raise bad("input", "image", f"{width}x{height} image has no pixels")
    if max(width, height) > MAX_IMAGE_SIDE:
        raise PayloadTooLarge(
            f"input: {width}x{height} image is over the limit of {MAX_IMAGE_SIDE} pixels a side",
            fields=[FieldError("input", "max-side", f"at most {MAX_IMAGE_SIDE} pixels a side")])
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"input: {width}x{height} image is over the limit of {max_pixels} pixels",
            fields=[FieldError("input", "max-pixels", f"at most {max_pixels} pixels")])


def decode_image(data: bytes, *, mode: str = "RGB",
                 max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """PNG or JPEG bytes as an array (``RGB``: HxWx3 uint8; ``L``: HxW uint8).

    Dimensions are checked from the header before the pixels are decompressed, so a
    small file declaring a huge image (a decompression bomb) costs nothing.
    """
    import warnings

    import numpy as np
    from PIL import Image, UnidentifiedImageError

    kind = sniff(data)
    if kind not in (PNG, JPEG):
        raise UnsupportedMediaType(
            "input: expected a PNG or JPEG image",
            fields=[FieldError("input", "media-type", "must be image/png or image/jpeg")],
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                check_image_size(img.width, img.height, max_pixels)
                img.load()
                return np.asarray(img.convert(mode))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # Pillow's own guard fires in ``open`` for the largest declared sizes.
        raise PayloadTooLarge(
            f"input: image is over the limit of {max_pixels} pixels ({e})",
            fields=[FieldError("input", "max-pixels", f"at most {max_pixels} pixels")]) from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise bad("input", "image", f"not a readable {kind} image ({e})") from e


def image_tensor(values: np.ndarray, *, channels: tuple[int, ...] = (3, 4),
                 max_pixels: int = MAX_IMAGE_PIXELS, min_side: int = 1) -> np.ndarray:
    """A numeric pixel tensor (HxW, or HxWxC with C in ``channels``) as uint8, or 4xx."""
    import numpy as np

    arr = np.asarray(values)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in channels):
        allowed = " or ".join(str(c) for c in channels)
        raise bad("input", "shape", f"image tensor must be HxW or HxWxC with C {allowed}, "
                  f"got shape {list(arr.shape)}")
    height, width = arr.shape[0], arr.shape[1]
    if min(height, width) < min_side:
        raise bad("input", "shape", f"image tensor must be at least {min_side}x{min_side}, "
                  f"got shape {list(arr.shape)}")
    check_image_size(width, height, max_pixels)
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise bad("input", "finite", "pixels must be finite numbers")
    pixels: np.ndarray = np.clip(arr, 0, 255).astype(np.uint8)
    return pixels
