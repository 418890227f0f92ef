"""The field types the settings groups share: comma-separated lists and revealable secrets.

A list arrives from the environment in the comma form (``DRIFTLOOP_X=a,b``), is parsed once
into a tuple here, and goes back to the comma form only when the settings are revealed for a
child process (``Settings.reveal``/``to_env``). pydantic-settings JSON-decodes list fields
from the environment by default; ``NoDecode`` turns that off so the comma form keeps working
(a JSON array is still accepted).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    NonNegativeFloat,
    SecretStr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    WrapSerializer,
)
from pydantic_settings import NoDecode

__all__ = [
    "PROJECT_ROOT",
    "REVEAL_SECRETS",
    "ArchiveEngine",
    "CommaList",
    "FlinkPipeline",
    "ModelTimeouts",
    "PipelineList",
    "Secret",
    "SecretList",
    "revealing",
    "split_commas",
]

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
REVEAL_SECRETS = {"reveal_secrets": True}
"""``model_dump(context=...)`` that writes secrets in the clear and lists in the comma form
(``Settings.reveal``): what a child process needs to rebuild the same settings."""

ArchiveEngine = Literal["auto", "consumer", "flink"]
FlinkPipeline = Literal["preprocess", "join", "archive"]

_MODEL_NAME = re.compile(r"[a-z0-9._-]+")


def revealing(info: SerializationInfo) -> bool:
    """True when the dump is for a child process (``context=REVEAL_SECRETS``)."""
    context = info.context
    return isinstance(context, Mapping) and bool(context.get("reveal_secrets"))


def split_commas(value: object) -> object:
    """``"a, b,,c"`` → ``("a", "b", "c")``; a JSON array or a sequence passes as items.
    Anything else is left for pydantic to reject with the field's name."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                return value
        else:
            return tuple(part.strip() for part in text.split(",") if part.strip())
    if isinstance(value, list | tuple | set | frozenset):
        return tuple(_item(v) for v in value if _item(v) != "")
    return value


def _item(value: object) -> object:
    if isinstance(value, SecretStr):
        return value
    return value.strip() if isinstance(value, str) else value


def _comma_form(
    value: Iterable[object], handler: SerializerFunctionWrapHandler, info: SerializationInfo
) -> Any:
    if revealing(info):
        return ",".join(v.get_secret_value() if isinstance(v, SecretStr) else str(v) for v in value)
    return handler(value)


def _reveal_secret(
    value: SecretStr, handler: SerializerFunctionWrapHandler, info: SerializationInfo
) -> Any:
    return value.get_secret_value() if revealing(info) else handler(value)


def _parse_timeouts(value: object) -> object:
    """``"ocr=20, speech=45.5"`` → ``{"ocr": "20", "speech": "45.5"}`` (pydantic checks the
    numbers); a mapping passes as it is."""
    if not isinstance(value, str):
        return value
    out: dict[str, str] = {}
    parts = split_commas(value)
    if not isinstance(parts, Iterable):  # a string always splits into a tuple (or stays one)
        return value
    for part in parts:
        name, sep, seconds = str(part).partition("=")
        name = name.strip()
        if not sep or not _MODEL_NAME.fullmatch(name):
            raise ValueError(f"{part!r} is not <model>=<seconds> (model: a-z 0-9 . _ -)")
        out[name] = seconds.strip()
    return out


def _timeouts_comma_form(
    value: Mapping[str, float], handler: SerializerFunctionWrapHandler, info: SerializationInfo
) -> Any:
    if revealing(info):
        return ",".join(f"{name}={seconds}" for name, seconds in value.items())
    return handler(value)


CommaList = Annotated[
    tuple[str, ...], NoDecode, BeforeValidator(split_commas), WrapSerializer(_comma_form)
]
"""Strings given as ``a,b,c`` (blanks and empty items dropped), held as a tuple."""

Secret = Annotated[SecretStr, WrapSerializer(_reveal_secret)]
"""A secret: masked in repr, str and dumps; in the clear only through ``Settings.reveal``."""

SecretList = Annotated[
    tuple[SecretStr, ...], NoDecode, BeforeValidator(split_commas), WrapSerializer(_comma_form)
]
"""Secrets given as ``a,b`` (bearer tokens), each masked like ``Secret``."""

ModelTimeouts = Annotated[
    dict[str, NonNegativeFloat],
    NoDecode,
    BeforeValidator(_parse_timeouts),
    WrapSerializer(_timeouts_comma_form),
]
"""Seconds per model given as ``ocr=20,speech=45.5``."""

PipelineList = Annotated[
    tuple[FlinkPipeline, ...],
    NoDecode,
    BeforeValidator(split_commas),
    WrapSerializer(_comma_form),
]
"""Flink pipelines given as ``preprocess,join``; an unknown name is refused."""
