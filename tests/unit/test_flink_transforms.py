"""The pure preprocessing transforms: audio, images, and raw record → preprocessed record."""

from __future__ import annotations

import base64
import io
import json
import math
import wave

import numpy as np
import pytest
from PIL import Image
from scipy.io import wavfile

from driftloop import events
from driftloop.events import PREPROCESSED
from flink.transforms import Rejected
from flink.transforms.audio import (
    AudioConfig,
    dbfs,
    decode_wav,
    encode_wav16,
    normalize_loudness,
    preprocess_audio,
    rms,
)
from flink.transforms.image import ImageConfig, encode_png, preprocess_image
from flink.transforms.records import (
    PreprocessConfig,
    preprocess_event,
    process_kafka_record,
)


def tone(rate: int, seconds: float, freq: float = 440.0, amp: float = 0.5,
         channels: int = 1, dc: float = 0.0, noise: float = 0.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    x = amp * np.sin(2 * np.pi * freq * t) + dc
    if noise:
        x = x + np.random.default_rng(1).normal(0, noise, x.size)
    return np.repeat(x[:, None], channels, axis=1) if channels > 1 else x


def wav_bytes(x: np.ndarray, rate: int, dtype: str = "int16") -> bytes:
    buf = io.BytesIO()
    if dtype == "int16":
        wavfile.write(buf, rate, np.clip(x * 32767, -32768, 32767).astype(np.int16))
    else:
        wavfile.write(buf, rate, x.astype(np.float32))
    return buf.getvalue()


def read_wav(data: bytes) -> tuple[int, np.ndarray]:
    rate, arr = wavfile.read(io.BytesIO(data))
    return rate, arr.astype(np.float64) / 32768.0


CFG = AudioConfig()


@pytest.mark.parametrize(
    ("rate", "channels", "dtype"),
    [(16000, 1, "int16"), (44100, 2, "int16"), (8000, 1, "float32"), (48000, 2, "float32"),
     (22050, 1, "int16")],
)
def test_audio_any_rate_and_layout_becomes_mono_16k_at_target_loudness(rate, channels, dtype):
    x = tone(rate, 1.5, amp=0.3, channels=channels)
    res = preprocess_audio(wav_bytes(x, rate, dtype), "audio/wav", CFG)
    assert res.sample_rate == 16000
    assert res.samples.ndim == 1
    assert abs(res.samples.size - 1.5 * 16000) <= 2
    assert abs(dbfs(rms(res.samples.astype(np.float64))) - CFG.target_rms_dbfs) < 0.05
    assert res.features["duration_s"] == pytest.approx(1.5, abs=1e-3)
    assert res.features["input_sample_rate"] == rate
    assert res.features["input_channels"] == channels
    # A 0.3-amplitude sine has an RMS of 0.3/sqrt(2).
    assert res.features["rms_db"] == pytest.approx(dbfs(0.3 / math.sqrt(2)), abs=0.1)
    assert res.features["peak"] == pytest.approx(0.3, abs=0.01)
    # 440 Hz crosses zero 880 times a second.
    assert res.features["zcr"] * 16000 == pytest.approx(880, rel=0.01)
    assert res.features["clipping_ratio"] == 0.0


@pytest.mark.parametrize("rate", [4_000_037, 999])
def test_a_sample_rate_outside_the_audio_range_is_rejected_before_resampling(rate):
    # 3 KB of samples declaring 4,000,037 Hz would make the resampler build a filter
    # proportional to the rate (seconds and gigabytes) before any check.
    data = wav_bytes(tone(16000, 0.1, amp=0.3), rate)
    with pytest.raises(Rejected) as err:
        preprocess_audio(data, "audio/wav", CFG)
    assert err.value.reason == Rejected.UNSUPPORTED_RATE
    assert str(rate) in err.value.detail


def test_resampled_tone_keeps_its_frequency():
    res = preprocess_audio(wav_bytes(tone(44100, 1.0, freq=1000.0), 44100), "audio/wav", CFG)
    spectrum = np.abs(np.fft.rfft(res.samples))
    assert np.argmax(spectrum) * 16000 / res.samples.size == pytest.approx(1000, abs=2)


def test_dc_offset_is_removed():
    res = preprocess_audio(wav_bytes(tone(16000, 1.0, amp=0.2, dc=0.3), 16000), "audio/wav", CFG)
    assert abs(float(res.samples.mean())) < 1e-4


def test_peak_limit_wins_over_loudness_target():
    # A spiky signal: mostly quiet with one full-scale click; the target gain would clip it.
    x = tone(16000, 1.0, amp=0.01)
    x[8000] = 0.9
    y, gain_db = normalize_loudness(x, -10.0, -1.0)
    assert float(np.max(np.abs(y))) == pytest.approx(10 ** (-1 / 20), rel=1e-9)
    assert dbfs(rms(y)) < -10.0
    assert gain_db < 40


def test_clipping_ratio_and_snr_features():
    clipped = np.clip(tone(16000, 1.0, amp=2.0), -1, 1)
    res = preprocess_audio(wav_bytes(clipped, 16000), "audio/wav", CFG)
    assert 0.3 < res.features["clipping_ratio"] < 0.9
    # Half tone, half faint noise: the loud frames stand ~50 dB over the quiet ones.
    x = np.concatenate([tone(16000, 1.0, amp=0.5), tone(16000, 1.0, amp=0.0, noise=0.001)])
    feats = preprocess_audio(wav_bytes(x, 16000, "float32"), "audio/wav", CFG).features
    assert feats["snr_db"] == pytest.approx(10 * math.log10(0.125 / 1e-6), abs=3)


def test_silence_is_kept_without_gain():
    res = preprocess_audio(wav_bytes(np.zeros(16000), 16000), "audio/wav", CFG)
    assert res.features["gain_db"] == 0.0
    assert not np.any(res.samples)


def test_24bit_wav_decodes():
    x = tone(16000, 0.5, amp=0.5)
    ints = np.round(x * (2**23 - 1)).astype(np.int32)
    raw = np.stack([(ints >> s) & 0xFF for s in (0, 8, 16)], axis=1).astype(np.uint8).tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(3)
        w.setframerate(16000)
        w.writeframes(raw)
    y, rate = decode_wav(buf.getvalue())
    assert rate == 16000
    assert np.max(np.abs(y[:, 0] - x)) < 1e-6


@pytest.mark.parametrize(
    ("data", "ct", "reason"),
    [
        (b"", "audio/wav", Rejected.EMPTY),
        (b"RIFF\x00\x00garbage", "audio/wav", Rejected.UNDECODABLE),
        (b"\x89PNG not audio", "audio/wav", Rejected.UNDECODABLE),
        (None, "image/png", Rejected.WRONG_CONTENT_TYPE),
        (None, None, Rejected.WRONG_CONTENT_TYPE),
    ],
)
def test_audio_rejects_with_reason(data, ct, reason):
    if data is None:
        data = wav_bytes(tone(16000, 0.1), 16000)
    with pytest.raises(Rejected) as e:
        preprocess_audio(data, ct, CFG)
    assert e.value.reason == reason


def test_audio_limits():
    data = wav_bytes(tone(8000, 3.0), 8000)
    with pytest.raises(Rejected) as e:
        preprocess_audio(data, "audio/wav", AudioConfig(max_duration_s=2.0))
    assert e.value.reason == Rejected.TOO_LONG
    with pytest.raises(Rejected) as e:
        preprocess_audio(data, "audio/wav", AudioConfig(max_bytes=1000))
    assert e.value.reason == Rejected.TOO_LARGE
    with pytest.raises(Rejected) as e:
        preprocess_audio(wav_bytes(np.zeros(0), 16000), "audio/wav", CFG)
    assert e.value.reason == Rejected.EMPTY


def test_wav16_roundtrip():
    x = tone(16000, 0.25, amp=0.5).astype(np.float32)
    rate, y = read_wav(encode_wav16(x, 16000))
    assert rate == 16000
    assert np.max(np.abs(y - x)) < 1 / 16000


# --------------------------------------------------------------------------- images


def png_bytes(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def gradient(h: int, w: int) -> np.ndarray:
    return np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))


def test_image_letterbox_keeps_aspect_and_records_geometry():
    arr = np.zeros((100, 200, 3), np.uint8)
    arr[..., 0] = 200
    res = preprocess_image(png_bytes(arr), "image/png", ImageConfig(width=64, height=64))
    assert res.pixels.shape == (64, 64, 3)
    assert res.letterbox == {"scale": 0.32, "pad_x": 0.0, "pad_y": 16.0}
    assert np.all(res.pixels[:16] == 0) and np.all(res.pixels[48:] == 0)
    assert np.all(res.pixels[20:44, :, 0] == 200)
    assert res.features["width"] == 200 and res.features["height"] == 100


def test_image_grayscale_jpeg():
    arr = np.full((50, 40, 3), 128, np.uint8)
    res = preprocess_image(png_bytes(arr, "JPEG"), "image/jpeg",
                           ImageConfig(width=32, height=32, mode="L"))
    assert res.pixels.shape == (32, 32)
    assert res.features["brightness_mean"] == pytest.approx(128 / 255, abs=0.01)
    assert res.features["brightness_std"] < 0.01
    assert res.features["contrast"] < 0.02


def test_image_features_tell_sharp_from_blurred():
    rng = np.random.default_rng(0)
    sharp = (rng.random((120, 120)) > 0.5).astype(np.uint8) * 255
    blurred = np.asarray(Image.fromarray(sharp).resize((12, 12)).resize((120, 120),
                                                                          Image.BILINEAR))
    f_sharp = preprocess_image(png_bytes(sharp), "image/png", ImageConfig()).features
    f_blur = preprocess_image(png_bytes(blurred), "image/png", ImageConfig()).features
    assert f_sharp["blur"] > 10 * f_blur["blur"]
    assert f_sharp["contrast"] == pytest.approx(1.0)
    assert f_sharp["brightness_mean"] == pytest.approx(0.5, abs=0.02)


def test_image_rgba_composited_on_white():
    arr = np.zeros((10, 10, 4), np.uint8)  # fully transparent
    res = preprocess_image(png_bytes(arr), "image/png", ImageConfig(width=10, height=10))
    assert np.all(res.pixels == 255)


@pytest.mark.parametrize(
    ("data", "ct", "cfg", "reason"),
    [
        (b"", "image/png", ImageConfig(), Rejected.EMPTY),
        (b"\x89PNG\r\n\x1a\nbroken", "image/png", ImageConfig(), Rejected.UNDECODABLE),
        ("jpeg", "image/png", ImageConfig(), Rejected.WRONG_CONTENT_TYPE),
        ("png", "audio/wav", ImageConfig(), Rejected.WRONG_CONTENT_TYPE),
        ("png", "image/png", ImageConfig(max_pixels=100), Rejected.TOO_LARGE),
        ("png", "image/png", ImageConfig(max_bytes=10), Rejected.TOO_LARGE),
        ("truncated", "image/png", ImageConfig(), Rejected.UNDECODABLE),
    ],
)
def test_image_rejects_with_reason(data, ct, cfg, reason):
    arr = gradient(64, 64)
    if data == "png":
        data = png_bytes(arr)
    elif data == "jpeg":
        data = png_bytes(arr, "JPEG")
    elif data == "truncated":
        data = png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8))[:300]
    with pytest.raises(Rejected) as e:
        preprocess_image(data, ct, cfg)
    assert e.value.reason == reason


# --------------------------------------------------------------------------- records


def raw_event(data: bytes, ct: str, model: str = "speech", id: str = "in-1") -> events.Event:
    return events.new_event(events.INPUT, "test", data, id=id, datacontenttype=ct, model=model)


def test_preprocessed_audio_event_keeps_id_and_inlines_payload():
    ev = raw_event(wav_bytes(tone(44100, 1.0), 44100), "audio/wav")
    out = preprocess_event(ev, "audio", PreprocessConfig())
    assert (out.id, out.type, out.extensions["model"]) == ("in-1", PREPROCESSED, "speech")
    assert out.data["sample_rate"] == 16000 and out.data["samples"] == 16000
    p = out.data["payload"]
    assert p["encoding"] == "base64" and p["content_type"] == "audio/wav"
    rate, y = read_wav(base64.b64decode(p["data"]))
    assert rate == 16000 and abs(dbfs(rms(y)) + 20) < 0.1
    assert json.loads(json.dumps(out.data)) == out.data


def test_big_payload_goes_to_blob_reference():
    stored: dict[str, bytes] = {}

    def offload(key: str, body: bytes) -> str:
        stored[key] = body
        return "file:///blobs"

    ev = raw_event(png_bytes(gradient(300, 300)), "image/png", model="ocr")
    cfg = PreprocessConfig(inline_max_bytes=100)
    out = preprocess_event(ev, "image", cfg, offload)
    p = out.data["payload"]
    assert p["encoding"] == "blob" and p["blob_url"] == "file:///blobs"
    assert p["blob_key"].startswith("preprocessed/model=ocr/date=")
    assert stored[p["blob_key"]][:4] == b"\x89PNG"
    assert out.data["shape"] == [224, 224, 3]


def test_kafka_record_roundtrip_and_dead_letter():
    ev = raw_event(wav_bytes(tone(16000, 0.5), 16000), "audio/wav", id="abc")
    rec = events.to_kafka(ev, key="speech")
    kw = dict(modality="audio", source_topic="raw", output_topic="out", deadletter_topic="dl",
              cfg=PreprocessConfig())
    ok = process_kafka_record(rec.value, rec.headers, **kw)
    assert ok.topic == "out" and ok.key == b"speech" and ok.reason is None
    back = events.from_kafka(ok.value, ok.headers)
    assert back.id == "abc" and back.type == PREPROCESSED
    bad = process_kafka_record(b"not a wav", dict(rec.headers), **kw)
    assert bad.topic == "dl" and bad.reason == Rejected.UNDECODABLE
    h = dict(bad.headers)
    assert h["dl_reason"].startswith(b"undecodable:") and h["dl_source_topic"] == b"raw"
    assert h["ce_id"] == b"abc" and bad.value == b"not a wav"
    no_ce = process_kafka_record(b"x", [], **kw)
    assert no_ce.reason == Rejected.INVALID_EVENT
    unsafe = events.to_kafka(raw_event(b"x", "audio/wav", model="../etc"))
    assert process_kafka_record(unsafe.value, unsafe.headers, **kw).reason == "invalid_event"
    # Dead letters name the offset they came from and never exceed their value limit.
    where = process_kafka_record(b"y" * 5000, dict(rec.headers), partition=2, offset=99,
                                 **{**kw, "cfg": PreprocessConfig(
                                     max_dead_letter_value_bytes=1024)})
    h = dict(where.headers)
    assert (h["dl_source_partition"], h["dl_source_offset"]) == (b"2", b"99")
    assert len(where.value) == 1024 and h["dl_value_bytes"] == b"5000"
    # A preprocessed record over the agreed record limit is dead-lettered, not sent.
    big = process_kafka_record(rec.value, rec.headers,
                               **{**kw, "cfg": PreprocessConfig(max_record_bytes=1024)})
    assert big.topic == "dl" and big.reason == Rejected.TOO_LARGE


def test_png_encoding_is_lossless():
    arr = np.random.default_rng(3).integers(0, 255, (8, 8, 3), np.uint8)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(arr)))), arr)
