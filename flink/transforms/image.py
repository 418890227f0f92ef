"""Images: PNG/JPEG bytes → a letterboxed grayscale or RGB array of a fixed size, plus features.

Letterboxing keeps the aspect ratio (models see undistorted shapes) and records the scale
and padding so detectors can map boxes back to the original pixels. Features are measured
on the original image in grayscale: brightness mean/std, contrast (5th-95th percentile
spread) and blur (variance of the Laplacian; low means blurry).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps
from scipy.ndimage import laplace

from driftloop.events import media
from flink.transforms import Rejected

FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/jpg": "JPEG"}
_FEATURE_MAX_SIDE = 1024
"""Features of bigger images are measured on a downscaled copy (bounded cost per record)."""


@dataclass(frozen=True)
class ImageConfig:
    """Target size, colour mode and limits of image preprocessing."""

    width: int = 224
    height: int = 224
    mode: str = "RGB"
    """``RGB`` or ``L`` (grayscale)."""
    fill: int = 0
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000

    def __post_init__(self) -> None:
        if self.mode not in ("RGB", "L"):
            raise ValueError(f"image mode must be RGB or L, got {self.mode!r}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError("image width and height must be positive")


@dataclass(frozen=True)
class ImageResult:
    pixels: np.ndarray
    """uint8, shape (height, width) for L or (height, width, 3) for RGB."""
    features: dict[str, float]
    letterbox: dict[str, float]
    """``scale``, ``pad_x``, ``pad_y``: original (x, y) → (x * scale + pad_x, y * scale + pad_y)."""


def check_content_type(content_type: str | None) -> str:
    """The PIL format name expected for ``content_type``; rejects anything else."""
    fmt = FORMATS.get(media.media_type(content_type))
    if fmt is None:
        raise Rejected(Rejected.WRONG_CONTENT_TYPE,
                       f"content type {content_type!r} is not image/png or image/jpeg")
    return fmt


def decode_image(data: bytes, expected_format: str, max_pixels: int) -> Image.Image:
    """Decode fully (truncated files fail here, not later) after checking format and size."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.format != expected_format:
                raise Rejected(Rejected.WRONG_CONTENT_TYPE,
                               f"bytes are {img.format or 'unknown'}, content type says "
                               f"{expected_format}")
            w, h = img.size
            if w * h > max_pixels:
                raise Rejected(Rejected.TOO_LARGE, f"{w}x{h} pixels > limit {max_pixels}")
            img.load()
    except Rejected:
        raise
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError...
        raise Rejected(Rejected.UNDECODABLE, f"not a readable image ({e})") from e
    if img.width == 0 or img.height == 0:
        raise Rejected(Rejected.EMPTY, "image has no pixels")
    return ImageOps.exif_transpose(img)


def to_mode(img: Image.Image, mode: str) -> Image.Image:
    """Grayscale or RGB; transparent pixels are composited on white first."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(base, rgba)
    return img.convert(mode)


def letterbox(img: Image.Image, width: int, height: int, fill: int) -> tuple[Image.Image, dict]:
    """Resize to fit inside (width, height) keeping the aspect ratio, pad the rest."""
    scale = min(width / img.width, height / img.height)
    new_w = max(1, round(img.width * scale))
    new_h = max(1, round(img.height * scale))
    resized = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    canvas = Image.new(img.mode, (width, height), fill if img.mode == "L" else (fill,) * 3)
    pad_x, pad_y = (width - new_w) // 2, (height - new_h) // 2
    canvas.paste(resized, (pad_x, pad_y))
    return canvas, {"scale": scale, "pad_x": float(pad_x), "pad_y": float(pad_y)}


def features(img: Image.Image) -> dict[str, float]:
    """Brightness mean/std and contrast in [0, 1], blur as Laplacian variance, original size."""
    w, h = img.size
    gray = img.convert("L")
    if max(w, h) > _FEATURE_MAX_SIDE:
        gray = gray.copy()
        gray.thumbnail((_FEATURE_MAX_SIDE, _FEATURE_MAX_SIDE), Image.Resampling.BILINEAR)
    g = np.asarray(gray, dtype=np.float64) / 255.0
    p5, p95 = np.percentile(g, [5, 95])
    return {
        "brightness_mean": float(g.mean()),
        "brightness_std": float(g.std()),
        "contrast": float(p95 - p5),
        "blur": float(laplace(g * 255.0).var()),
        "width": float(w),
        "height": float(h),
    }


def preprocess_image(data: bytes, content_type: str | None, cfg: ImageConfig) -> ImageResult:
    """The whole image chain; raises ``Rejected`` with a reason for unusable inputs."""
    fmt = check_content_type(content_type)
    if not data:
        raise Rejected(Rejected.EMPTY, "no bytes")
    if len(data) > cfg.max_bytes:
        raise Rejected(Rejected.TOO_LARGE, f"{len(data)} bytes > limit {cfg.max_bytes}")
    img = decode_image(data, fmt, cfg.max_pixels)
    img = to_mode(img, "RGB" if img.mode not in ("L", "I;16", "I", "F") else "L")
    feats = features(img)
    boxed, lb = letterbox(to_mode(img, cfg.mode), cfg.width, cfg.height, cfg.fill)
    return ImageResult(np.asarray(boxed, dtype=np.uint8), feats, lb)


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 (H, W) or (H, W, 3) → PNG bytes (lossless, so every consumer sees the same)."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
