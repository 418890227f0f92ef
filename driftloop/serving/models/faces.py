"""Frontal-face detection with the Haar cascade that opencv-python-headless 4.x ships."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from driftloop.serving import inputs

DEFAULT_CONFIG: dict[str, Any] = {
    "cascade": "haarcascade_frontalface_default.xml",
    "scale_factor": 1.1,
    "min_neighbors": 5,
    "min_size": 30,
}


@dataclass
class FacesModel:
    """Boxes ``[x1, y1, x2, y2]`` in pixels, label ``face``, score from the cascade's weight."""

    config: Mapping[str, Any]
    modality: str = "image"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        import cv2

        from driftloop.naming import safe_segment

        name = safe_segment(str(self.config["cascade"]), field="cascade")
        self._cascade = cv2.CascadeClassifier(cv2.data.haarcascades + name)
        if self._cascade.empty():
            raise ValueError(f"OpenCV ships no cascade named {name!r}")

    @classmethod
    def from_artifact(cls, artifact: Mapping[str, bytes]) -> FacesModel:
        return cls({**DEFAULT_CONFIG, **json.loads(artifact.get("config.json", b"{}"))})

    @staticmethod
    def artifact(**overrides: Any) -> dict[str, bytes]:
        return {"config.json": json.dumps({**DEFAULT_CONFIG, **overrides}).encode()}

    def predict(self, media: bytes | None, tensor: Any | None) -> dict[str, Any]:
        import numpy as np

        if media is not None:
            gray = inputs.decode_image(media, mode="L")
        else:
            arr = np.asarray(tensor)
            if arr.ndim == 3 and arr.shape[2] in (3, 4):
                arr = arr[..., :3].mean(axis=2)
            if arr.ndim != 2 or min(arr.shape) < 8:
                raise inputs.bad("input", "shape", f"image tensor must be HxW or HxWx3 of at "
                                 f"least 8x8, got shape {np.asarray(tensor).shape}")
            gray = np.clip(arr, 0, 255).astype(np.uint8)
        return self.detect(gray)

    def detect(self, gray: Any) -> dict[str, Any]:
        import cv2

        size = int(self.config["min_size"])
        with self._lock:
            rects, _levels, weights = self._cascade.detectMultiScale3(
                cv2.equalizeHist(gray), scaleFactor=float(self.config["scale_factor"]),
                minNeighbors=int(self.config["min_neighbors"]), minSize=(size, size),
                outputRejectLevels=True,
            )
        boxes, scores = [], []
        for (x, y, w, h), wt in sorted(zip(rects, weights, strict=True),
                                       key=lambda r: -float(r[1])):
            boxes.append([int(x), int(y), int(x + w), int(y + h)])
            scores.append(round(1.0 / (1.0 + math.exp(-float(wt))), 4))
        return {"boxes": boxes, "labels": ["face"] * len(boxes), "scores": scores}
