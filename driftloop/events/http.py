"""The HTTP protocol binding: binary, structured and batch content modes in (parsed through
the cloudevents SDK, then held to driftloop's rules), binary mode out; and the JSON event
format (``to_structured``/``from_structured``) the structured modes and Kafka share."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from cloudevents.exceptions import GenericException as CloudEventsError
from cloudevents.http import CloudEvent as SdkEvent
from cloudevents.http import from_http as ce_from_http

from driftloop.errors import BadRequest, FieldError, UnsupportedMediaType, ValidationFailed
from driftloop.events import media
from driftloop.events.model import (
    Event,
    decode_data,
    encode_data,
    format_time,
    is_json_data,
    parse_time,
)
from driftloop.events.safejson import (
    MAX_JSON_DEPTH,
    RejectedItem,
    json_problems,
    load_json,
    parse_json,
)
from driftloop.events.types import BATCH, SPECVERSION, STRUCTURED

__all__ = [
    "CORE_ATTRIBUTES",
    "REQUIRED_ATTRIBUTES",
    "attribute_errors",
    "from_http",
    "from_structured",
    "split_batch",
    "string_errors",
    "to_http_binary",
    "to_http_structured",
    "to_structured",
]

REQUIRED_ATTRIBUTES = ("id", "source", "type")
CORE_ATTRIBUTES = frozenset(
    {
        "id",
        "source",
        "type",
        "specversion",
        "time",
        "datacontenttype",
        "subject",
        "dataschema",
        "data",
        "data_base64",
    }
)
"""Attribute names that are not extensions."""


def to_structured(event: Event) -> dict[str, Any]:
    """The structured-mode JSON object (``data_base64`` for bytes)."""
    out: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": event.id,
        "source": event.source,
        "type": event.type,
    }
    if event.time is not None:
        out["time"] = format_time(event.time)
    if event.datacontenttype:
        out["datacontenttype"] = event.datacontenttype
    if event.subject:
        out["subject"] = event.subject
    out.update(event.extensions)
    if isinstance(event.data, bytes | bytearray):
        out["data_base64"] = base64.b64encode(event.data).decode()
    elif event.data is not None:
        out["data"] = event.data
    return out


# Characters the CloudEvents String type excludes: controls, surrogates, noncharacters.
_NOT_CE_STRING = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]")
_INT32 = (-(2**31), 2**31 - 1)


def _plain(value: str) -> bool:
    """Printable ASCII: holds none of what ``_NOT_CE_STRING`` finds (controls are not
    printable; surrogates and noncharacters are not ASCII). Two C-speed checks where the
    regex would scan; intake runs this on every attribute of every event."""
    return value.isascii() and value.isprintable()


def string_errors(attrs: Mapping[str, Any]) -> list[FieldError]:
    """Attribute values the CloudEvents type system refuses: strings with control
    characters, lone surrogates or noncharacters; integers outside 32 bits."""
    errors = []
    for name, value in attrs.items():
        if name in ("data", "data_base64"):
            continue
        if isinstance(value, str) and not _plain(value) and _NOT_CE_STRING.search(value):
            errors.append(
                FieldError(
                    str(name),
                    "cloudevents-string",
                    "must not hold control characters, lone surrogates or noncharacters",
                )
            )
        elif (
            isinstance(value, int)
            and not isinstance(value, bool)
            and not _INT32[0] <= value <= _INT32[1]
        ):
            errors.append(
                FieldError(str(name), "integer-range", "CloudEvents integers are signed 32-bit")
            )
    return errors


def _from_sdk(sdk: SdkEvent, *, max_depth: int = MAX_JSON_DEPTH) -> Event:
    return _from_attributes(sdk.get_attributes(), sdk.get_data(), max_depth=max_depth)


def _from_attributes(
    attrs: Mapping[str, Any], data: Any, *, max_depth: int = MAX_JSON_DEPTH
) -> Event:
    """An ``Event`` from parsed attributes and data, held to driftloop's rules. An event
    without ``time`` is stamped now, as the SDK's ``CloudEvent`` does (intake's events
    always carry a time)."""
    errors = [
        FieldError(name, "required", f"CloudEvents attribute '{name}' is required")
        for name in REQUIRED_ATTRIBUTES
        if not isinstance(attrs.get(name), str) or not attrs.get(name)
    ]
    errors += string_errors(attrs)
    time_value = attrs.get("time")
    t = None if "time" in attrs else datetime.now(UTC)
    try:
        t = parse_time(time_value) if time_value is not None else t
    except ValueError as e:
        errors.append(FieldError("time", "rfc3339", f"not an RFC 3339 time: {e}"))
    if errors:
        raise ValidationFailed(errors)
    ext = {k: str(v) for k, v in attrs.items() if k not in CORE_ATTRIBUTES and v is not None}
    ct = attrs.get("datacontenttype")
    if isinstance(data, bytes | bytearray) and is_json_data(ct):
        data = decode_data(bytes(data), ct, max_depth=max_depth)
    return Event(
        id=attrs["id"],
        source=attrs["source"],
        type=attrs["type"],
        data=data,
        time=t,
        datacontenttype=ct,
        subject=attrs.get("subject"),
        extensions=ext,
    )


_ATTRIBUTE_NAME = re.compile(r"[a-z0-9]{1,20}")
_STRING_ATTRIBUTES = ("time", "datacontenttype", "subject", "dataschema")


@lru_cache(maxsize=1024)
def _attribute_name_ok(name: str) -> bool:
    """``_ATTRIBUTE_NAME`` full match, remembered: events repeat the same few names."""
    return _ATTRIBUTE_NAME.fullmatch(name) is not None


def attribute_errors(obj: Mapping[str, Any]) -> list[FieldError]:
    """Attribute names and value types that break the CloudEvents JSON format."""
    errors = []
    for name, value in obj.items():
        if name in ("data", "data_base64"):
            continue
        if not isinstance(name, str) or not _attribute_name_ok(name):
            errors.append(
                FieldError(
                    f"{name!s:.64}",
                    "attribute-name",
                    "attribute names are 1-20 lowercase letters or digits",
                )
            )
        elif name in _STRING_ATTRIBUTES and not isinstance(value, str):
            errors.append(FieldError(name, "string", f"'{name}' must be a string"))
        elif name not in CORE_ATTRIBUTES and not isinstance(value, str | int | bool):
            errors.append(
                FieldError(
                    name, "extension-type", "extension values must be strings, integers or booleans"
                )
            )
    if "data_base64" in obj and not isinstance(obj["data_base64"], str):
        errors.append(FieldError("data_base64", "string", "'data_base64' must be a string"))
    return errors


def from_structured(obj: Mapping[str, Any] | RejectedItem) -> Event:
    """A structured-mode JSON object to an ``Event``."""
    if isinstance(obj, RejectedItem):
        raise ValidationFailed(list(obj.errors))
    if not isinstance(obj, Mapping):
        raise BadRequest(
            "event: a structured CloudEvent must be a JSON object",
            fields=[FieldError("event", "object", "must be a JSON object")],
        )
    # JSON does not tell 7 from 7.0: an integral number is an integer extension value.
    obj = {
        k: int(v) if isinstance(v, float) and v.is_integer() and k not in CORE_ATTRIBUTES else v
        for k, v in obj.items()
    }
    specversion = obj.get("specversion")
    if specversion != SPECVERSION:
        raise ValidationFailed(
            [
                FieldError(
                    "specversion",
                    "equals 1.0",
                    f"specversion must be '1.0', got {specversion!r:.40}",
                )
            ]
        )
    problems = [
        FieldError(n, "required", f"CloudEvents attribute '{n}' is required (non-empty string)")
        for n in REQUIRED_ATTRIBUTES
        if not isinstance(obj.get(n), str) or not obj.get(n)
    ]
    problems += attribute_errors(obj)
    if problems:
        raise ValidationFailed(problems)
    # What the SDK's from_dict builds, without its per-event cost (names are checked
    # lowercase above; a missing time is stamped by _from_attributes like the SDK does).
    attrs = {k: v for k, v in obj.items() if k != "data"}
    raw_b64 = attrs.pop("data_base64", None)
    event = _from_attributes(attrs, obj.get("data"))
    if raw_b64 is not None:
        try:
            data = base64.b64decode(str(raw_b64), validate=True)
        except ValueError as e:
            raise ValidationFailed([FieldError("data_base64", "base64", str(e))]) from e
        event = replace(event, data=data)
    return event


def from_http(
    headers: Mapping[str, str], body: bytes, *, max_depth: int = MAX_JSON_DEPTH
) -> list[Event]:
    """Every event of one HTTP request, in binary, structured or batch mode.

    A batch yields one event per element; elements that are not valid CloudEvents raise
    for the whole request here. Use ``split_batch`` for per-element results.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    content_type = media.media_type(lower.get("content-type"))
    if media.is_cloudevents_batch(content_type):
        return [from_structured(obj) for obj in split_batch(body, max_depth=max_depth)]
    structured = media.is_cloudevents_structured(content_type)
    if "ce-specversion" not in lower and not structured:
        raise UnsupportedMediaType(
            "not a CloudEvent: send binary mode (ce-* headers), structured mode "
            f"({STRUCTURED}) or batch mode ({BATCH}); got content-type {content_type!r}",
            fields=[
                FieldError(
                    "content-type",
                    "cloudevents mode",
                    "binary, structured or batch CloudEvents mode required",
                )
            ],
        )
    if structured:
        return [from_structured(load_json(body, max_depth=max_depth))]
    if lower.get("ce-specversion") != SPECVERSION:
        raise ValidationFailed(
            [FieldError("ce-specversion", "equals 1.0", "ce-specversion must be '1.0'")]
        )
    missing = [
        FieldError(f"ce-{n}", "required", f"header ce-{n} is required")
        for n in REQUIRED_ATTRIBUTES
        if not lower.get(f"ce-{n}")
    ]
    if missing:
        raise ValidationFailed(missing)
    attrs = _binary_attributes(lower)
    if attrs is not None:  # plain attribute names: read directly, as the SDK would
        return [_from_attributes(attrs, body or None, max_depth=max_depth)]
    try:
        sdk = ce_from_http(dict(headers), body, data_unmarshaller=lambda b: b)
    except (CloudEventsError, ValueError, TypeError) as e:
        raise BadRequest(f"event: not a valid CloudEvent ({e})") from e
    return [_from_sdk(sdk, max_depth=max_depth)]


_SDK_ONLY = frozenset({"data", "data_base64", "datacontenttype", "extensions"})
"""Binary-mode header names the SDK treats specially; such requests go through it."""


def _binary_attributes(lower: Mapping[str, str]) -> dict[str, str] | None:
    """The attributes of a binary-mode request whose ``ce-*`` names are plain (1-20
    lowercase letters or digits, none the SDK treats specially), else None. Reading them
    here costs a fraction of the SDK's marshaller, which intake pays per event."""
    attrs: dict[str, str] = {}
    for name, value in lower.items():
        if name.startswith("ce-"):
            attr = name[3:]
            if attr in _SDK_ONLY or not _ATTRIBUTE_NAME.fullmatch(attr):
                return None
            attrs[attr] = value
    if "content-type" in lower:
        attrs["datacontenttype"] = lower["content-type"]
    return attrs


def split_batch(body: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> list[Any]:
    """The elements of a batch-mode body (a JSON array), not yet validated. An element
    holding a refused number or a lone surrogate comes back as a ``RejectedItem``, so
    only that element fails."""
    items, suspicious = parse_json(body, max_depth=max_depth, where="body")
    if not isinstance(items, list):
        raise BadRequest(
            "body: a batch must be a JSON array of CloudEvents",
            fields=[FieldError("body", "array", "must be a JSON array")],
        )
    if not items:
        raise BadRequest(
            "body: a batch must hold at least one event",
            fields=[FieldError("body", "non-empty", "must not be empty")],
        )
    if suspicious:
        for i, item in enumerate(items):
            problems = json_problems(item)
            if problems:
                items[i] = RejectedItem(tuple(problems))
    return items


def to_http_binary(event: Event) -> tuple[dict[str, str], bytes]:
    """Headers and body of a binary-mode HTTP request."""
    headers = {
        "ce-specversion": SPECVERSION,
        "ce-id": event.id,
        "ce-source": event.source,
        "ce-type": event.type,
    }
    if event.time is not None:
        headers["ce-time"] = format_time(event.time)
    if event.subject:
        headers["ce-subject"] = event.subject
    for k, v in event.extensions.items():
        headers[f"ce-{k}"] = v
    if event.datacontenttype:
        headers["content-type"] = event.datacontenttype
    return headers, encode_data(event) or b""


def to_http_structured(event: Event) -> tuple[dict[str, str], bytes]:
    """Headers and body of a structured-mode HTTP request."""
    return {"content-type": STRUCTURED}, json.dumps(to_structured(event)).encode()
