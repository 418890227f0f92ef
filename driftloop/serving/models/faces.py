"""Frontal-face detection with the Haar cascade that opencv-python-headless 4.x ships."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from driftloop.catalogue import FirstVersion, Sample
from driftloop.serving import inputs

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

DEFAULT_CONFIG: dict[str, Any] = {
    "cascade": "haarcascade_frontalface_default.xml",
    "scale_factor": 1.1,
    "min_neighbors": 5,
    "min_size": 30,
}
ASTRONAUT_FACE = [178, 72, 272, 167]
"""The face in scikit-image's astronaut photo, ``[x1, y1, x2, y2]`` (``sample()``'s truth)."""


@dataclass
class FacesModel:
    """Boxes ``[x1, y1, x2, y2]`` in pixels, label ``face``, score from the cascade's weight."""

    config: Mapping[str, Any]
    modality: str = "image"
    limits: inputs.InputLimits = field(default_factory=inputs.InputLimits)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        import cv2

        from driftloop.naming import safe_segment

        name = safe_segment(str(self.config["cascade"]), field="cascade")
        self._cascade = cv2.CascadeClassifier(cv2.data.haarcascades + name)
        if self._cascade.empty():
            raise ValueError(f"OpenCV ships no cascade named {name!r}")

    @classmethod
    def from_artifact(cls, artifact: Mapping[str, bytes], *,
                      limits: inputs.InputLimits | None = None) -> FacesModel:
        return cls({**DEFAULT_CONFIG, **json.loads(artifact.get("config.json", b"{}"))},
                   limits=limits or inputs.InputLimits())

    @staticmethod
    def artifact(**overrides: Any) -> dict[str, bytes]:
        return {"config.json": json.dumps({**DEFAULT_CONFIG, **overrides}).encode()}

    @classmethod
    def initial_version(cls) -> FirstVersion:
        """Configuration only: the cascade ships in opencv-python-headless."""
        return FirstVersion(cls.artifact(),
                            lineage={"weights": "opencv-python-headless haarcascades"})

    @staticmethod
    def sample() -> Sample | None:
        """scikit-image's astronaut photo and its one face; None without scikit-image."""
        import io

        from PIL import Image

        try:
            from skimage import data
        except ImportError:
            return None
        astronaut: Callable[[], NDArray[np.uint8]] = data.astronaut  # skimage is untyped
        buf = io.BytesIO()
        Image.fromarray(astronaut()).save(buf, "PNG")
        return Sample(buf.getvalue(), {"boxes": [ASTRONAUT_FACE]})

    def predict(self, media: bytes | None, tensor: Any | None) -> dict[str, Any]:
        if media is not None:
            gray = inputs.decode_image(media, mode="L", max_pixels=self.limits.max_image_pixels)
        elif tensor is not None:
            arr = inputs.image_tensor(tensor, max_pixels=self.limits.max_image_pixels,
                                      min_side=8)
            gray = arr if arr.ndim == 2 else arr[..., :3].mean(axis=2).astype(arr.dtype)
        else:
            raise inputs.bad("input", "required", "an image (PNG/JPEG or a pixel tensor)")
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
