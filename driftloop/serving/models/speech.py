"""Speech-to-text with pocketsphinx and the en-us model its wheel bundles."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from driftloop.catalogue import FirstVersion, Sample
from driftloop.serving import inputs

DEFAULT_CONFIG: dict[str, Any] = {"samprate": inputs.SAMPLE_RATE, "max_seconds": 60.0}
_NOT_DECODER_OPTIONS = ("max_seconds", "max_sample_rate")
SENTENCE = "please call me tomorrow morning"
"""What ``sample()`` says."""


@dataclass
class SpeechModel:
    """A pocketsphinx decoder; one utterance at a time (the decoder is not thread-safe)."""

    config: Mapping[str, Any]
    modality: str = "audio"
    limits: inputs.InputLimits = field(default_factory=inputs.InputLimits)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        from pocketsphinx import Decoder

        options = {k: v for k, v in self.config.items() if k not in _NOT_DECODER_OPTIONS}
        self._decoder = Decoder(**options)

    @classmethod
    def from_artifact(cls, artifact: Mapping[str, bytes], *,
                      limits: inputs.InputLimits | None = None) -> SpeechModel:
        """The artifact's decoder options; its ``max_seconds`` may only lower the limit."""
        limits = limits or inputs.InputLimits()
        config = {**DEFAULT_CONFIG, **json.loads(artifact.get("config.json", b"{}"))}
        config["max_seconds"] = min(float(config["max_seconds"]), limits.max_audio_s)
        return cls(config, limits=limits)

    @staticmethod
    def artifact(**overrides: Any) -> dict[str, bytes]:
        """The registry artifact: decoder options (the acoustic model is the bundled one)."""
        return {"config.json": json.dumps({**DEFAULT_CONFIG, **overrides}).encode()}

    @classmethod
    def initial_version(cls) -> FirstVersion:
        """Configuration only: the weights ship in the pocketsphinx wheel."""
        return FirstVersion(cls.artifact(), lineage={"weights": "pocketsphinx wheel, en-us model"})

    @staticmethod
    def sample() -> Sample | None:
        """``SENTENCE`` spoken by flite's slt voice; None without flite."""
        import shutil
        import subprocess
        import tempfile
        from pathlib import Path

        if not shutil.which("flite"):
            return None
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "s.wav"
            subprocess.run(["flite", "-voice", "slt", "-t", SENTENCE, "-o", str(wav)],
                           check=True, capture_output=True, timeout=60)
            return Sample(wav.read_bytes(), {"text": SENTENCE})

    @property
    def max_seconds(self) -> float:
        return float(self.config.get("max_seconds", 60.0))

    def predict(self, media: bytes | None, tensor: Any | None) -> dict[str, Any]:
        if media is not None:
            if inputs.sniff(media) != inputs.WAV:
                raise inputs.bad("input", "media-type", "speech expects a WAV file or PCM samples")
            pcm = inputs.decode_wav(media, max_seconds=self.max_seconds,
                                    max_rate=self.limits.max_sample_rate)
        elif tensor is not None:
            pcm = inputs.pcm_from_tensor(tensor, max_seconds=self.max_seconds)
        else:
            raise inputs.bad("input", "required", "a WAV file or PCM samples")
        return self.transcribe(pcm.tobytes())

    def transcribe(self, pcm16: bytes) -> dict[str, Any]:
        """Transcript and confidence of 16 kHz mono int16 PCM."""
        with self._lock:
            d = self._decoder
            d.start_utt()
            d.process_raw(pcm16, full_utt=True)
            d.end_utt()
            hyp = d.hyp()
            if hyp is None:
                return {"text": "", "confidence": 0.0}
            confidence = float(d.get_logmath().exp(hyp.prob))
        return {"text": hyp.hypstr, "confidence": round(min(max(confidence, 0.0), 1.0), 4)}
