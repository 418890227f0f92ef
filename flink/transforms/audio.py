"""Audio: WAV bytes → mono 16 kHz float signal at a target loudness, plus drift features.

Steps: decode (PCM 8/16/24/32-bit or float; any channel count and rate) → downmix to mono
→ resample (polyphase) → remove DC → normalize RMS loudness to a target dBFS, lowering the
gain when the peak would pass the limit (no clipping, ever). Features describe the input
as received (after downmix/resample/DC removal, before gain) because drift checks compare
what apps send, not what the model sees.
"""

from __future__ import annotations

import io
import math
import wave
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy.io import wavfile
from scipy.signal import resample_poly

from driftloop.events import media
from flink.transforms import Rejected

AUDIO_CONTENT_TYPES = frozenset({"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"})
_EPS = 1e-12
_CLIP_LEVEL = 0.999


@dataclass(frozen=True)
class AudioConfig:
    """Limits and targets of audio preprocessing."""

    sample_rate: int = 16_000
    target_rms_dbfs: float = -20.0
    peak_limit_dbfs: float = -1.0
    max_bytes: int = 20 * 1024 * 1024
    max_duration_s: float = 60.0
    min_input_rate: int = 1_000
    """Lowest input sample rate that is audio."""
    max_input_rate: int = 192_000
    """Highest input sample rate: the resampler's filter grows with the rate's ratio to the
    target, so an absurd declared rate would cost seconds and gigabytes."""
    frame_s: float = 0.02
    """Frame length for the SNR estimate."""


@dataclass(frozen=True)
class AudioResult:
    """A model-ready signal and what was measured on the way."""

    samples: np.ndarray
    """float32 mono in [-1, 1] at ``sample_rate``."""
    sample_rate: int
    features: dict[str, float]


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """WAV bytes → (float64 array of shape (frames, channels) in [-1, 1], sample rate)."""
    try:
        rate, raw = wavfile.read(io.BytesIO(data))
    except Exception as e:  # scipy raises ValueError, EOFError, struct.error...
        try:  # 24-bit and oddities scipy refuses: the stdlib reader as a second opinion
            return _decode_with_wave(data)
        except Exception:
            raise Rejected(Rejected.UNDECODABLE, f"not a readable WAV file ({e})") from e
    arr = np.asarray(raw)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.dtype == np.uint8:
        x = (arr.astype(np.float64) - 128.0) / 128.0
    elif arr.dtype == np.int16:
        x = arr.astype(np.float64) / 32768.0
    elif arr.dtype == np.int32:
        x = arr.astype(np.float64) / 2147483648.0
    elif arr.dtype.kind == "f":
        x = arr.astype(np.float64)
        if not np.all(np.isfinite(x)):
            raise Rejected(Rejected.UNDECODABLE, "float WAV holds NaN or Infinity samples")
    else:
        raise Rejected(Rejected.UNDECODABLE, f"unsupported WAV sample type {arr.dtype}")
    if rate <= 0:
        raise Rejected(Rejected.UNDECODABLE, f"invalid sample rate {rate}")
    return x, int(rate)


def _decode_with_wave(data: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data)) as w:
        width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
        frames = w.readframes(w.getnframes())
    if width != 3:
        raise ValueError(f"sample width {width}")
    b = np.frombuffer(frames, dtype=np.uint8).reshape(-1, 3)
    ints = (b[:, 0].astype(np.int32) | (b[:, 1].astype(np.int32) << 8)
            | (b[:, 2].astype(np.int32) << 16))
    ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
    return (ints.astype(np.float64) / float(1 << 23)).reshape(-1, channels), int(rate)


def downmix(x: np.ndarray) -> np.ndarray:
    """(frames, channels) → mono by averaging the channels."""
    return x.mean(axis=1) if x.ndim == 2 else x


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling with an anti-aliasing filter (exact rational ratio)."""
    if rate_in == rate_out or x.size == 0:
        return x
    ratio = Fraction(rate_out, rate_in)
    return resample_poly(x, ratio.numerator, ratio.denominator)


def remove_dc(x: np.ndarray) -> np.ndarray:
    return x - x.mean() if x.size else x


def dbfs(level: float) -> float:
    """A linear amplitude (RMS or peak) as dB relative to full scale."""
    return 20.0 * math.log10(max(level, _EPS))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def normalize_loudness(
    x: np.ndarray, target_rms_dbfs: float, peak_limit_dbfs: float
) -> tuple[np.ndarray, float]:
    """Scale to the target RMS; if the peak would pass the limit, scale to the limit instead.

    Returns the signal and the gain in dB that was applied.
    """
    level = rms(x)
    if level < _EPS:
        return x, 0.0
    gain = 10.0 ** ((target_rms_dbfs - dbfs(level)) / 20.0)
    peak = float(np.max(np.abs(x)))
    limit = 10.0 ** (peak_limit_dbfs / 20.0)
    if peak * gain > limit:
        gain = limit / peak
    return x * gain, 20.0 * math.log10(gain)


def snr_db(x: np.ndarray, rate: int, frame_s: float) -> float:
    """Estimated SNR: loud frames (90th percentile energy) over quiet ones (10th)."""
    n = max(int(rate * frame_s), 1)
    frames = x[: (x.size // n) * n].reshape(-1, n)
    if frames.shape[0] < 2:
        return 0.0
    energy = np.mean(np.square(frames), axis=1)
    signal, noise = np.percentile(energy, 90), np.percentile(energy, 10)
    return float(10.0 * math.log10(max(signal, _EPS) / max(noise, _EPS)))


def features(x: np.ndarray, rate: int, clipping_ratio: float, frame_s: float) -> dict[str, float]:
    """Duration, RMS dBFS, peak, zero-crossing rate, estimated SNR and clipping ratio."""
    signs = np.signbit(x)
    zcr = float(np.count_nonzero(signs[1:] != signs[:-1]) / max(x.size - 1, 1))
    return {
        "duration_s": x.size / rate,
        "rms_db": dbfs(rms(x)),
        "peak": float(np.max(np.abs(x))) if x.size else 0.0,
        "zcr": zcr,
        "snr_db": snr_db(x, rate, frame_s),
        "clipping_ratio": clipping_ratio,
    }


def check_content_type(content_type: str | None) -> None:
    if media.media_type(content_type) not in AUDIO_CONTENT_TYPES:
        raise Rejected(Rejected.WRONG_CONTENT_TYPE,
                       f"content type {content_type!r} is not audio/wav")


def preprocess_audio(data: bytes, content_type: str | None, cfg: AudioConfig) -> AudioResult:
    """The whole audio chain; raises ``Rejected`` with a reason for unusable inputs."""
    check_content_type(content_type)
    if not data:
        raise Rejected(Rejected.EMPTY, "no bytes")
    if len(data) > cfg.max_bytes:
        raise Rejected(Rejected.TOO_LARGE, f"{len(data)} bytes > limit {cfg.max_bytes}")
    x, rate = decode_wav(data)
    if not cfg.min_input_rate <= rate <= cfg.max_input_rate:
        raise Rejected(Rejected.UNSUPPORTED_RATE, f"sample rate {rate} Hz is outside "
                       f"{cfg.min_input_rate}-{cfg.max_input_rate} Hz")
    if x.shape[0] == 0:
        raise Rejected(Rejected.EMPTY, "WAV holds no samples")
    duration = x.shape[0] / rate
    if duration > cfg.max_duration_s:
        raise Rejected(Rejected.TOO_LONG,
                       f"{duration:.2f} s > limit {cfg.max_duration_s:.2f} s")
    clipping = float(np.count_nonzero(np.abs(x) >= _CLIP_LEVEL) / x.size)
    mono = remove_dc(resample(downmix(x), rate, cfg.sample_rate))
    feats = features(mono, cfg.sample_rate, clipping, cfg.frame_s)
    feats["input_sample_rate"] = float(rate)
    feats["input_channels"] = float(x.shape[1])
    out, gain_db = normalize_loudness(mono, cfg.target_rms_dbfs, cfg.peak_limit_dbfs)
    feats["gain_db"] = gain_db
    return AudioResult(out.astype(np.float32), cfg.sample_rate, feats)


def encode_wav16(samples: np.ndarray, rate: int) -> bytes:
    """Mono float samples → 16-bit PCM WAV bytes (what speech runtimes read)."""
    pcm = np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()
