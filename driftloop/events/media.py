"""The one Content-Type parser: every driftloop surface that looks at a media type asks here,
so ``Application/JSON; charset=utf-8`` means the same thing everywhere."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from driftloop.events.types import BATCH, JSON, STRUCTURED

__all__ = [
    "MediaType",
    "is_cloudevents_batch",
    "is_cloudevents_structured",
    "is_json",
    "is_text",
    "media_type",
    "parse",
]


class MediaType(NamedTuple):
    """``type/subtype`` lowercased, and the parameters (names lowercased, quotes removed)."""

    type: str
    params: Mapping[str, str]


def parse(content_type: str | None) -> MediaType:
    """A Content-Type header value as (type, params); ``("", {})`` when absent or blank.
    Malformed parameters are skipped: the type alone decides what a body is."""
    if not content_type:
        return MediaType("", {})
    essence, _, rest = content_type.partition(";")
    params: dict[str, str] = {}
    for part in rest.split(";"):
        name, eq, value = part.partition("=")
        name = name.strip().lower()
        if eq and name:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            params[name] = value
    return MediaType(essence.strip().lower(), params)


def media_type(content_type: str | None) -> str:
    """Just the lowercased ``type/subtype`` of a Content-Type ('' when absent)."""
    if not content_type:
        return ""
    return content_type.partition(";")[0].strip().lower()


def is_json(content_type: str | None) -> bool:
    """``application/json``, ``text/json`` or any ``+json`` suffix; False when absent."""
    t = media_type(content_type)
    return t == JSON or t == "text/json" or t.endswith("+json")


def is_text(content_type: str | None) -> bool:
    """A ``text/*`` media type."""
    return media_type(content_type).startswith("text/")


def is_cloudevents_structured(content_type: str | None) -> bool:
    """Structured content mode (``application/cloudevents+json``)."""
    return media_type(content_type) == STRUCTURED


def is_cloudevents_batch(content_type: str | None) -> bool:
    """Batch content mode (``application/cloudevents-batch+json``)."""
    return media_type(content_type) == BATCH
