"""OCR with tesseract (Debian's binary and English data) through pytesseract."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from driftloop.catalogue import FirstVersion, Sample
from driftloop.errors import InferenceTimeout
from driftloop.serving import inputs

DEFAULT_CONFIG: dict[str, Any] = {"lang": "eng", "psm": 6, "min_confidence": 0.0}
LINE = "Invoice 2041 due on March 15"
"""The text of ``sample()``'s image."""


@dataclass
class OcrModel:
    """Words with boxes and confidences, joined into lines of text."""

    config: Mapping[str, Any]
    modality: str = "image"
    limits: inputs.InputLimits = field(default_factory=inputs.InputLimits)

    @classmethod
    def from_artifact(cls, artifact: Mapping[str, bytes], *,
                      limits: inputs.InputLimits | None = None) -> OcrModel:
        return cls({**DEFAULT_CONFIG, **json.loads(artifact.get("config.json", b"{}"))},
                   limits=limits or inputs.InputLimits())

    @property
    def max_pixels(self) -> int:
        """Tesseract's time grows with the pixels it reads: OCR has its own, lower bound."""
        return min(self.limits.max_image_pixels, self.limits.ocr_max_pixels)

    @staticmethod
    def artifact(**overrides: Any) -> dict[str, bytes]:
        return {"config.json": json.dumps({**DEFAULT_CONFIG, **overrides}).encode()}

    @classmethod
    def initial_version(cls) -> FirstVersion:
        """Configuration only: the weights are Debian's tesseract data."""
        return FirstVersion(cls.artifact(), lineage={"weights": "Debian tesseract-ocr-eng"})

    @staticmethod
    def sample() -> Sample:
        """``LINE`` rendered black on white with Pillow's default font, as PNG."""
        import io

        from PIL import Image, ImageDraw, ImageFont

        font = ImageFont.load_default(size=36)
        line = Image.new("L", (640, 80), 255)
        ImageDraw.Draw(line).text((20, 20), LINE, font=font, fill=0)
        buf = io.BytesIO()
        line.save(buf, "PNG")
        return Sample(buf.getvalue(), {"text": LINE})

    def predict(self, media: bytes | None, tensor: Any | None) -> dict[str, Any]:
        if media is not None:
            image = inputs.decode_image(media, mode="RGB", max_pixels=self.max_pixels)
        elif tensor is not None:
            image = inputs.image_tensor(tensor, max_pixels=self.max_pixels)
        else:
            raise inputs.bad("input", "required", "an image (PNG/JPEG or a pixel tensor)")
        return self.read(image)

    def read(self, image: Any) -> dict[str, Any]:
        import pytesseract
        from PIL import Image

        timeout = self.limits.timeout_s or 0  # pytesseract: 0 waits forever
        try:
            data = pytesseract.image_to_data(
                Image.fromarray(image), lang=self.config["lang"],
                config=f"--psm {int(self.config['psm'])}",
                output_type=pytesseract.Output.DICT, timeout=timeout,
            )
        except RuntimeError as e:
            # pytesseract kills tesseract at the timeout and raises RuntimeError.
            if "timeout" not in str(e).lower():
                raise
            raise InferenceTimeout(f"input: OCR took longer than the limit of {timeout:g} s"
                                   ) from e
        lines: dict[tuple[int, int, int], list[str]] = {}
        boxes, words, scores = [], [], []
        for i, word in enumerate(data["text"]):
            conf = float(data["conf"][i])
            if not word.strip() or conf < 0 or conf < float(self.config["min_confidence"]):
                continue
            x, y, w, h = (int(data[k][i]) for k in ("left", "top", "width", "height"))
            key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
            lines.setdefault(key, []).append(word)
            boxes.append([x, y, x + w, y + h])
            words.append(word)
            scores.append(round(conf / 100.0, 4))
        text = "\n".join(" ".join(ws) for _, ws in sorted(lines.items()))
        confidence = round(sum(scores) / len(scores), 4) if scores else 0.0
        return {"text": text, "confidence": confidence, "boxes": boxes, "labels": words,
                "scores": scores}
