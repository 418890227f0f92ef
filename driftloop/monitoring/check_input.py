"""drift-check's input, parsed and bounded before any check runs (pure, no I/O): the ad hoc
check request, a ping's ``models`` list, inline window columns, and each column's
missing values (counted, then left out of the check).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftloop.blob import check_key
from driftloop.drift import DriftInputError
from driftloop.errors import BadRequest, FieldError, ValidationFailed
from driftloop.naming import SAFE_NAME_RULE, is_safe_segment

WINDOW_FILE_SUFFIXES = (".csv", ".parquet", ".pq", ".jsonl", ".json")
MAX_WINDOW_KEY_LENGTH = 1024


class EmptyWindow(BadRequest):
    reason = "empty_window"


def input_error(e: DriftInputError) -> BadRequest:
    field_name = f"window.{e.feature}" if e.feature else "window"
    return BadRequest(str(e), fields=[FieldError(field_name, e.rule, str(e))])


@dataclass(frozen=True)
class Window:
    """What one check judged: feature columns and the labeled records for quality."""

    columns: Mapping[str, np.ndarray]
    labeled: list[dict[str, Any]]
    counts: Mapping[str, int]
    labeled_ts_ms: list[int] = field(default_factory=list)
    from_stream: bool = False
    """Read from Kafka (records of others): non-finite values count as missing, never a 400."""
    confidences: Mapping[str, list[float]] = field(default_factory=dict)
    """Prediction confidences per version (what the quality estimate is made of)."""


def split_missing(values: np.ndarray, *, infinite_missing: bool) -> tuple[np.ndarray, int]:
    """A column without its missing values (None, NaN; ±inf too when ``infinite_missing``),
    and how many there were (pure)."""
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        gone = ~np.isfinite(arr) if infinite_missing else np.isnan(arr)
    elif arr.dtype.kind in "iub":
        return arr, 0
    else:
        gone = np.fromiter(
            (
                v is None
                or (isinstance(v, float) and (v != v or (infinite_missing and abs(v) == np.inf)))
                for v in arr.ravel()
            ),
            dtype=bool,
            count=arr.size,
        )
    n = int(gone.sum())
    return (arr[~gone] if n else arr), n


def numbers_or_nan(values: np.ndarray) -> np.ndarray:
    """A column as floats; what is not a number (text, booleans, None) becomes NaN (pure)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "fiu":
        return arr.astype(np.float64)
    out = np.full(arr.size, np.nan)
    for i, v in enumerate(arr.ravel()):
        if isinstance(v, bool | np.bool_) or v is None:
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def ping_models(data: Any, max_models: int) -> list[str] | None:
    """The models a ping asks for (None: every model with a profile); data must be an
    object and ``models`` a list of at most ``max_models`` safe names, duplicates dropped."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise BadRequest(
            "ping data must be a JSON object",
            fields=[FieldError("data", "object", "must be a JSON object (or absent)")],
        )
    models = data.get("models")
    if models is None:
        return None
    if not isinstance(models, list):
        raise BadRequest(
            "data.models must be a list of model names",
            fields=[FieldError("data.models", "array", "must be a JSON array of names")],
        )
    if len(models) > max_models:
        raise BadRequest(
            f"data.models lists {len(models)} models; at most {max_models} "
            "(DRIFTLOOP_DRIFT_CHECK_MAX_MODELS)",
            fields=[FieldError("data.models", "max-items", f"at most {max_models} names")],
        )
    errors = [
        FieldError(f"data.models[{i}]", "safe-name", f"{m!r:.80} {SAFE_NAME_RULE}")
        for i, m in enumerate(models)
        if not is_safe_segment(m)
    ]
    if errors:
        raise ValidationFailed(errors)
    return list(dict.fromkeys(models))


def check_fields(request: Mapping[str, Any]) -> list[FieldError]:
    """Every field error of an ad hoc check request (pure)."""
    errors: list[FieldError] = []
    model = request.get("model")
    if not isinstance(model, str) or not model:
        errors.append(FieldError("model", "required", "a model name is required"))
    elif not is_safe_segment(model):
        errors.append(FieldError("model", "safe-name", f"{model!r:.80} {SAFE_NAME_RULE}"))
    version = request.get("version")
    if version is not None and not is_safe_segment(version):
        errors.append(FieldError("version", "safe-name", f"{version!r:.80} {SAFE_NAME_RULE}"))
    window, key = request.get("window"), request.get("window_key")
    if window is not None and key is not None:
        errors.append(FieldError("window_key", "one-of", "give window or window_key, not both"))
    if window is not None and (
        not isinstance(window, dict) or not all(isinstance(v, list) for v in window.values())
    ):
        errors.append(FieldError("window", "columns", "object of arrays"))
    if key is not None:
        errors.extend(_window_key_errors(key))
    return errors


def _window_key_errors(key: Any) -> list[FieldError]:
    if not isinstance(key, str):
        return [FieldError("window_key", "string", "must be a blob key string")]
    if len(key) > MAX_WINDOW_KEY_LENGTH:
        return [FieldError("window_key", "max-length", f"at most {MAX_WINDOW_KEY_LENGTH} chars")]
    try:
        check_key(key)
    except ValueError as e:
        return [FieldError("window_key", "relative-key", str(e)[:300])]
    if any(ord(c) < 0x20 or c == "\x7f" for c in key):
        return [FieldError("window_key", "relative-key", "must not hold control characters")]
    if not key.lower().endswith(WINDOW_FILE_SUFFIXES):
        return [
            FieldError(
                "window_key", "format", f"must end with one of {', '.join(WINDOW_FILE_SUFFIXES)}"
            )
        ]
    return []


def column(values: list[Any]) -> np.ndarray:
    if all((isinstance(v, int | float) and not isinstance(v, bool)) or v is None for v in values):
        return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    return np.asarray([str(v) for v in values], dtype=object)


def column_confidences(cols: Mapping[str, np.ndarray]) -> list[float]:
    """The finite numbers of an inline window's ``confidence`` (or ``output.confidence``)
    column: an ad hoc window's predictions, for the quality estimate (pure)."""
    for name in ("output.confidence", "confidence"):
        values = cols.get(name)
        if values is not None and np.asarray(values).dtype.kind in "fiu":
            arr = np.asarray(values, dtype=np.float64)
            return [float(v) for v in arr[np.isfinite(arr)]]
    return []


def row_count(cols: Mapping[str, np.ndarray]) -> int:
    return max((len(v) for v in cols.values()), default=0)


__all__ = [
    "EmptyWindow",
    "Window",
    "check_fields",
    "column",
    "column_confidences",
    "input_error",
    "numbers_or_nan",
    "ping_models",
    "row_count",
    "split_missing",
]
