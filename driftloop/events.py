"""CloudEvents 1.0 for driftloop: the event types, their payloads and the bindings.

``Event`` is the one transport type. Conversions are pure functions:

- HTTP: binary, structured and batch (``application/cloudevents-batch+json``) modes in;
  binary and structured out. Parsing goes through the cloudevents SDK.
- Kafka protocol binding, binary content mode, both ways (``ce_*`` headers, the data as
  the record value, ``content-type`` header for ``datacontenttype``); structured records
  (``application/cloudevents+json`` values) are read too.

Payload models validate the ``data`` of each type and report every field error at once.
"""

from __future__ import annotations

import base64
import json
import math
import re
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

from cloudevents.conversion import to_dict as ce_to_dict
from cloudevents.exceptions import GenericException as CloudEventsError
from cloudevents.http import CloudEvent as SdkEvent
from cloudevents.http import from_dict as ce_from_dict
from cloudevents.http import from_http as ce_from_http
from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from driftloop.errors import BadRequest, FieldError, UnsupportedMediaType, ValidationFailed
from driftloop.naming import SAFE_ID_RULE, SAFE_NAME_RULE, is_safe_id, is_safe_segment

SPECVERSION = "1.0"

INPUT = "io.driftloop.input.v1"
PREPROCESSED = "io.driftloop.preprocessed.v1"
LABELED = "io.driftloop.labeled.v1"
PREDICTION = "io.driftloop.prediction.v1"
FEEDBACK = "io.driftloop.feedback.v1"
DRIFT_DETECTED = "io.driftloop.drift.detected.v1"
RETRAIN_REQUESTED = "io.driftloop.retrain.requested.v1"
MODEL_TRAINED = "io.driftloop.model.trained.v1"
MODEL_PROMOTED = "io.driftloop.model.promoted.v1"
MODEL_ROLLEDBACK = "io.driftloop.model.rolledback.v1"
PING = "dev.knative.sources.ping"

CONTROL_TYPES: frozenset[str] = frozenset(
    {DRIFT_DETECTED, RETRAIN_REQUESTED, MODEL_TRAINED, MODEL_PROMOTED, MODEL_ROLLEDBACK}
)

JSON = "application/json"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"

_REQUIRED = ("id", "source", "type")
_CORE = {"id", "source", "type", "specversion", "time", "datacontenttype", "subject",
         "dataschema", "data", "data_base64"}


@dataclass(frozen=True)
class Event:
    """One CloudEvent. ``data`` is JSON-like, or ``bytes`` for media payloads."""

    id: str
    source: str
    type: str
    data: Any = None
    time: datetime | None = None
    datacontenttype: str | None = None
    subject: str | None = None
    extensions: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_binary(self) -> bool:
        return isinstance(self.data, bytes | bytearray)

    def with_extensions(self, **ext: str) -> Event:
        return replace(self, extensions={**self.extensions, **ext})


def new_event(
    type: str,
    source: str,
    data: Any = None,
    *,
    id: str | None = None,
    datacontenttype: str | None = None,
    subject: str | None = None,
    time: datetime | None = None,
    **extensions: str,
) -> Event:
    """A new event with a fresh uuid4 id and the current UTC time unless given."""
    if datacontenttype is None and not isinstance(data, bytes | bytearray) and data is not None:
        datacontenttype = JSON
    return Event(
        id=id or str(uuid.uuid4()),
        source=source,
        type=type,
        data=data,
        time=time or datetime.now(UTC),
        datacontenttype=datacontenttype,
        subject=subject,
        extensions={k: str(v) for k, v in extensions.items()},
    )


# --------------------------------------------------------------------------- JSON

MAX_JSON_DEPTH = 64
"""Default of ``Settings.max_json_depth``: the deepest nesting of arrays and objects parsed."""
MAX_DOUBLE = sys.float_info.max
"""Largest magnitude of a number accepted, integers included (rewards, drift values): what
every consumer can hold as a double."""
_MAX_DOUBLE_INT = int(MAX_DOUBLE)
_MAX_INT_DIGITS = len(str(_MAX_DOUBLE_INT))
MAX_NUMBER_CHARS = 1000

_STRING_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")
# Text that may hold a number beyond a double's range: a run of 200+ digits, or an exponent
# of 3+ digits on a number token (not any "e123" inside an id); fewer than 200 integer digits
# with a 2-digit exponent stay below 1e299. Only then do the slower checking hooks run.
_LONG_NUMBER = re.compile(
    r"\d{200}|(?<![\w.+-])-?\d+(?:\.\d+)?[eE]\+?\d{3,}(?![\w.])"
)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_MAX_PROBLEMS = 20


@dataclass(frozen=True)
class _Refused:
    """Stands in for a number the parser refuses, so that only the event holding it is
    rejected (a batch's other events are still judged on their own)."""

    rule: str
    message: str


@dataclass(frozen=True)
class RejectedItem:
    """A batch element that broke a parsing rule (a refused number, a lone surrogate)."""

    errors: tuple[FieldError, ...]


def _parse_int(text: str) -> int | _Refused:
    digits = len(text) - text.startswith("-")
    if digits <= _MAX_INT_DIGITS:
        value = int(text)
        if abs(value) <= _MAX_DOUBLE_INT:
            return value
    return _Refused("number-range", f"an integer of {digits} digits; numbers must lie within "
                    f"±{MAX_DOUBLE:.17g} (what a double holds)")


def _parse_float(text: str) -> float | _Refused:
    if len(text) > MAX_NUMBER_CHARS:
        return _Refused("number-range", f"a number of {len(text)} characters; at most "
                        f"{MAX_NUMBER_CHARS}")
    value = float(text)
    if math.isinf(value):
        return _Refused("number-range", f"{text[:40]} is beyond ±{MAX_DOUBLE:.17g} (what a "
                        "double holds)")
    return value


def _too_deep(where: str, max_depth: int) -> BadRequest:
    rule = f"arrays and objects nest at most {max_depth} levels"
    return BadRequest(f"{where}: nested too deep ({rule})",
                      fields=[FieldError(where, "max-depth", rule)])


def _depth_exceeds(text: str, max_depth: int) -> bool:
    """Whether valid JSON ``text`` nests deeper than ``max_depth``: strings and scalars are
    dropped, then innermost ``[]``/``{}`` pairs are removed one level per pass."""
    if text.count("[") + text.count("{") <= max_depth:
        return False
    skeleton = _NOT_BRACKET.sub("", _STRING_TOKEN.sub("", text))
    for _ in range(max_depth):
        if not skeleton:
            return False
        skeleton = _INNERMOST.sub("", skeleton)
    return bool(skeleton)


def _parse_json(body: bytes | str, *, max_depth: int, where: str) -> tuple[Any, bool]:
    """Parse JSON under driftloop's limits; raise ``BadRequest`` naming ``where`` for a body
    that is not UTF-8 JSON or nests too deep. The flag says whether values may hold refused
    numbers or lone surrogates (then ``json_problems`` finds them)."""
    if isinstance(body, bytes | bytearray):
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRequest(f"{where}: not UTF-8 ({e.reason} at byte {e.start})",
                             fields=[FieldError(where, "utf-8", "JSON must be UTF-8 text")]) from e
    else:
        text = body
    numbers = _LONG_NUMBER.search(text) is not None
    try:
        if numbers:
            value = json.loads(text, parse_int=_parse_int, parse_float=_parse_float)
        else:
            value = json.loads(text)
    except RecursionError as e:
        raise _too_deep(where, max_depth) from e
    except ValueError as e:  # JSONDecodeError, and anything int()/float() refuse
        raise BadRequest(f"{where}: not valid JSON ({e})",
                         fields=[FieldError(where, "json", f"not valid JSON: {e}")]) from e
    if _depth_exceeds(text, max_depth):
        raise _too_deep(where, max_depth)
    return value, bool(numbers or _SURROGATE_ESCAPE.search(text) or _SURROGATE.search(text))


def json_problems(value: Any, prefix: str = "") -> list[FieldError]:
    """Refused numbers and strings (or keys) holding lone surrogates in a parsed value,
    each named by its dotted path under ``prefix``."""
    problems: list[FieldError] = []
    stack: list[tuple[str, Any]] = [(prefix, value)]
    while stack and len(problems) < _MAX_PROBLEMS:
        path, v = stack.pop()
        name = path or "body"
        if isinstance(v, _Refused):
            problems.append(FieldError(name, v.rule, v.message))
        elif isinstance(v, str):
            if _SURROGATE.search(v):
                problems.append(FieldError(name, "unicode",
                                           "holds a lone surrogate (not Unicode text)"))
        elif isinstance(v, dict):
            for k, item in v.items():
                child = f"{path}.{k}" if path else str(k)
                if _SURROGATE.search(k):
                    problems.append(FieldError(path or "body", "unicode",
                                               "a key holds a lone surrogate (not Unicode text)"))
                    continue
                stack.append((child, item))
        elif isinstance(v, list):
            stack.extend((f"{path}.{i}" if path else str(i), item) for i, item in enumerate(v))
    return problems


def load_json(body: bytes | str, *, max_depth: int = MAX_JSON_DEPTH, where: str = "body") -> Any:
    """The one way driftloop parses a JSON request body or payload: UTF-8, nesting at most
    ``max_depth``, integers within a double's range, finite numbers (NaN and Infinity
    literals are left to the payload rules), no lone surrogates; anything else is a
    ``BadRequest`` (400) naming the field and the rule."""
    value, suspicious = _parse_json(body, max_depth=max_depth, where=where)
    if suspicious:
        problems = json_problems(value, "" if where == "body" else where)
        if problems:
            raise ValidationFailed(problems)
    return value


# --------------------------------------------------------------------------- time / data


def format_time(t: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


_RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt](?P<clock>\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d+))?"
    r"(?P<zone>[Zz]|[+-]\d{2}:\d{2})"
)


def parse_time(value: str) -> datetime:
    """An RFC 3339 date-time (``T`` separator, zone required) as an aware UTC datetime.

    Raises ``ValueError`` for anything else, including times that leave the representable
    range once moved to UTC (``9999-12-31T23:59:59-23:59``)."""
    m = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"not an RFC 3339 date-time: {value!r:.80}")
    zone = m["zone"]
    frac = f".{m['frac'][:6]}" if m["frac"] else ""
    t = datetime.fromisoformat(
        f"{m['date']}T{m['clock']}{frac}{'+00:00' if zone in 'Zz' else zone}"
    )
    try:
        return t.astimezone(UTC)
    except OverflowError as e:
        raise ValueError(f"date-time out of range once in UTC: {value!r:.80}") from e


def _is_json_type(content_type: str | None) -> bool:
    if not content_type:
        return True
    ct = content_type.split(";", 1)[0].strip().lower()
    return ct == JSON or ct.endswith("+json") or ct == "text/json"


def encode_data(event: Event) -> bytes | None:
    """The data as bytes for a binary-mode body or Kafka value."""
    if event.data is None:
        return None
    if isinstance(event.data, bytes | bytearray):
        return bytes(event.data)
    if isinstance(event.data, str) and not _is_json_type(event.datacontenttype):
        return event.data.encode()
    return json.dumps(event.data, separators=(",", ":"), allow_nan=False).encode()


def decode_data(
    raw: bytes | None, content_type: str | None, *, max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """Bytes of a binary-mode body or Kafka value back to data (JSON decoded when JSON)."""
    if raw is None:
        return None
    if _is_json_type(content_type):
        if raw == b"":
            return None
        return load_json(raw, max_depth=max_depth, where="data")
    if content_type and content_type.split(";", 1)[0].strip().lower().startswith("text/"):
        return raw.decode("utf-8", errors="replace")
    return raw


# --------------------------------------------------------------------------- structured


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


def string_errors(attrs: Mapping[str, Any]) -> list[FieldError]:
    """Attribute values the CloudEvents type system refuses: strings with control
    characters, lone surrogates or noncharacters; integers outside 32 bits."""
    errors = []
    for name, value in attrs.items():
        if name in ("data", "data_base64"):
            continue
        if isinstance(value, str) and _NOT_CE_STRING.search(value):
            errors.append(FieldError(str(name), "cloudevents-string",
                                     "must not hold control characters, lone surrogates "
                                     "or noncharacters"))
        elif (isinstance(value, int) and not isinstance(value, bool)
              and not _INT32[0] <= value <= _INT32[1]):
            errors.append(FieldError(str(name), "integer-range",
                                     "CloudEvents integers are signed 32-bit"))
    return errors


def _from_sdk(sdk: SdkEvent, *, max_depth: int = MAX_JSON_DEPTH) -> Event:
    attrs = sdk.get_attributes()
    errors = [
        FieldError(name, "required", f"CloudEvents attribute '{name}' is required")
        for name in _REQUIRED
        if not isinstance(attrs.get(name), str) or not attrs.get(name)
    ]
    errors += string_errors(attrs)
    time_value = attrs.get("time")
    t = None
    try:
        t = parse_time(time_value) if time_value is not None else None
    except ValueError as e:
        errors.append(FieldError("time", "rfc3339", f"not an RFC 3339 time: {e}"))
    if errors:
        raise ValidationFailed(errors)
    ext = {k: str(v) for k, v in attrs.items() if k not in _CORE and v is not None}
    data = sdk.get_data()
    ct = attrs.get("datacontenttype")
    if isinstance(data, bytes | bytearray) and _is_json_type(ct):
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


def attribute_errors(obj: Mapping[str, Any]) -> list[FieldError]:
    """Attribute names and value types that break the CloudEvents JSON format."""
    errors = []
    for name, value in obj.items():
        if name in ("data", "data_base64"):
            continue
        if not isinstance(name, str) or not _ATTRIBUTE_NAME.fullmatch(name):
            errors.append(FieldError(f"{name!s:.64}", "attribute-name",
                                     "attribute names are 1-20 lowercase letters or digits"))
        elif name in _STRING_ATTRIBUTES and not isinstance(value, str):
            errors.append(FieldError(name, "string", f"'{name}' must be a string"))
        elif name not in _CORE and not isinstance(value, str | int | bool):
            errors.append(FieldError(name, "extension-type",
                                     "extension values must be strings, integers or booleans"))
    if "data_base64" in obj and not isinstance(obj["data_base64"], str):
        errors.append(FieldError("data_base64", "string", "'data_base64' must be a string"))
    return errors


def from_structured(obj: Mapping[str, Any] | RejectedItem) -> Event:
    """A structured-mode JSON object to an ``Event``."""
    if isinstance(obj, RejectedItem):
        raise ValidationFailed(list(obj.errors))
    if not isinstance(obj, Mapping):
        raise BadRequest("event: a structured CloudEvent must be a JSON object",
                         fields=[FieldError("event", "object", "must be a JSON object")])
    # JSON does not tell 7 from 7.0: an integral number is an integer extension value.
    obj = {k: int(v) if isinstance(v, float) and v.is_integer() and k not in _CORE else v
           for k, v in obj.items()}
    specversion = obj.get("specversion")
    if specversion != SPECVERSION:
        raise ValidationFailed([FieldError("specversion", "equals 1.0",
                                           f"specversion must be '1.0', got {specversion!r:.40}")])
    problems = [
        FieldError(n, "required", f"CloudEvents attribute '{n}' is required (non-empty string)")
        for n in _REQUIRED
        if not isinstance(obj.get(n), str) or not obj.get(n)
    ]
    problems += attribute_errors(obj)
    if problems:
        raise ValidationFailed(problems)
    attrs = dict(obj)
    raw_b64 = attrs.pop("data_base64", None)
    try:
        sdk = ce_from_dict(attrs)
    except (CloudEventsError, ValueError, TypeError, KeyError) as e:
        raise BadRequest(f"event: not a valid CloudEvent ({e})") from e
    event = _from_sdk(sdk)
    if raw_b64 is not None:
        try:
            data = base64.b64decode(str(raw_b64), validate=True)
        except ValueError as e:
            raise ValidationFailed([FieldError("data_base64", "base64", str(e))]) from e
        event = replace(event, data=data)
    return event


# --------------------------------------------------------------------------- HTTP


def from_http(
    headers: Mapping[str, str], body: bytes, *, max_depth: int = MAX_JSON_DEPTH
) -> list[Event]:
    """Every event of one HTTP request, in binary, structured or batch mode.

    A batch yields one event per element; elements that are not valid CloudEvents raise
    for the whole request here. Use ``split_batch`` for per-element results.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    content_type = lower.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type == BATCH:
        return [from_structured(obj) for obj in split_batch(body, max_depth=max_depth)]
    if "ce-specversion" not in lower and content_type != STRUCTURED:
        raise UnsupportedMediaType(
            "not a CloudEvent: send binary mode (ce-* headers), structured mode "
            f"({STRUCTURED}) or batch mode ({BATCH}); got content-type {content_type!r}",
            fields=[FieldError("content-type", "cloudevents mode",
                               "binary, structured or batch CloudEvents mode required")],
        )
    if content_type == STRUCTURED:
        return [from_structured(load_json(body, max_depth=max_depth))]
    if lower.get("ce-specversion") != SPECVERSION:
        raise ValidationFailed([FieldError("ce-specversion", "equals 1.0",
                                           "ce-specversion must be '1.0'")])
    missing = [
        FieldError(f"ce-{n}", "required", f"header ce-{n} is required")
        for n in _REQUIRED
        if not lower.get(f"ce-{n}")
    ]
    if missing:
        raise ValidationFailed(missing)
    try:
        sdk = ce_from_http(dict(headers), body, data_unmarshaller=lambda b: b)
    except (CloudEventsError, ValueError, TypeError) as e:
        raise BadRequest(f"event: not a valid CloudEvent ({e})") from e
    return [_from_sdk(sdk, max_depth=max_depth)]


def split_batch(body: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> list[Any]:
    """The elements of a batch-mode body (a JSON array), not yet validated. An element
    holding a refused number or a lone surrogate comes back as a ``RejectedItem``, so
    only that element fails."""
    items, suspicious = _parse_json(body, max_depth=max_depth, where="body")
    if not isinstance(items, list):
        raise BadRequest("body: a batch must be a JSON array of CloudEvents",
                         fields=[FieldError("body", "array", "must be a JSON array")])
    if not items:
        raise BadRequest("body: a batch must hold at least one event",
                         fields=[FieldError("body", "non-empty", "must not be empty")])
    if suspicious:
        for i, item in enumerate(items):
            problems = json_problems(item)
            if problems:
                items[i] = RejectedItem(tuple(problems))
    return items


def to_http_binary(event: Event) -> tuple[dict[str, str], bytes]:
    """Headers and body of a binary-mode HTTP request."""
    headers = {"ce-specversion": SPECVERSION, "ce-id": event.id, "ce-source": event.source,
               "ce-type": event.type}
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
    return {"content-type": STRUCTURED}, json.dumps(to_structured(event)).encode()


def to_sdk(event: Event) -> SdkEvent:
    """The cloudevents SDK object (for code that hands events to the SDK)."""
    return ce_from_dict(to_structured(event))


def sdk_to_dict(sdk: SdkEvent) -> dict[str, Any]:
    return ce_to_dict(sdk)


# --------------------------------------------------------------------------- Kafka


class KafkaRecord(NamedTuple):
    """What a producer sends: key, value, headers (Kafka protocol binding, binary mode)."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def to_kafka(event: Event, key: str | None = None) -> KafkaRecord:
    """Binary content mode: ``ce_*`` headers, the data as value, key from ``key`` or
    the ``partitionkey`` extension."""
    headers: list[tuple[str, bytes]] = [
        ("ce_specversion", SPECVERSION.encode()),
        ("ce_id", event.id.encode()),
        ("ce_source", event.source.encode()),
        ("ce_type", event.type.encode()),
    ]
    if event.time is not None:
        headers.append(("ce_time", format_time(event.time).encode()))
    if event.subject:
        headers.append(("ce_subject", event.subject.encode()))
    for k, v in event.extensions.items():
        headers.append((f"ce_{k}", str(v).encode()))
    if event.datacontenttype:
        headers.append(("content-type", event.datacontenttype.encode()))
    k = key if key is not None else event.extensions.get("partitionkey")
    return KafkaRecord(k.encode() if k is not None else None, encode_data(event), headers)


def from_kafka(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | None,
    key: bytes | None = None,
) -> Event:
    """A Kafka record (binary or structured mode) back to an ``Event``."""
    h: dict[str, str] = {}
    for name, raw in headers or []:
        h[name.lower()] = raw.decode("utf-8", errors="replace") if raw is not None else ""
    content_type = h.get("content-type")
    if "ce_specversion" not in h:
        if content_type and content_type.split(";", 1)[0].strip().lower() == STRUCTURED:
            return from_structured(load_json(value or b""))
        raise BadRequest("record: not a CloudEvent (no ce_specversion header, not structured)",
                         fields=[FieldError("ce_specversion", "required", "header missing")])
    missing = [FieldError(f"ce_{n}", "required", f"header ce_{n} is required")
               for n in _REQUIRED if not h.get(f"ce_{n}")]
    if missing:
        raise ValidationFailed(missing)
    try:
        t = parse_time(h["ce_time"]) if h.get("ce_time") else None
    except ValueError as e:
        raise ValidationFailed([FieldError("ce_time", "rfc3339", str(e))]) from e
    ext = {
        name[3:]: v
        for name, v in h.items()
        if name.startswith("ce_") and name[3:] not in _CORE
    }
    return Event(
        id=h["ce_id"],
        source=h["ce_source"],
        type=h["ce_type"],
        data=decode_data(value, content_type),
        time=t,
        datacontenttype=content_type,
        subject=h.get("ce_subject"),
        extensions=ext,
    )


# --------------------------------------------------------------------------- payloads


def _all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Mapping):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_all_finite(v) for v in value)
    return True


class Payload(BaseModel):
    """Base of the ``data`` models: unknown keys are kept, values must be JSON types."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @classmethod
    def parse(cls, data: Any, *, prefix: str = "data") -> Any:
        """Validate ``data``; raise ``ValidationFailed`` naming every bad field and rule."""
        if not isinstance(data, Mapping):
            raise ValidationFailed(
                [FieldError(prefix, "object", f"{prefix} must be a JSON object")]
            )
        try:
            return cls.model_validate(dict(data))
        except PydanticValidationError as e:
            raise ValidationFailed(pydantic_field_errors(e, prefix=prefix)) from e


def pydantic_field_errors(error: PydanticValidationError, *, prefix: str) -> list[FieldError]:
    """Pydantic's errors as ``FieldError``s: dotted field path, rule name, message."""
    out = []
    for err in error.errors():
        loc = ".".join(str(p) for p in err["loc"] if p != "__root__")
        name = f"{prefix}.{loc}" if loc else prefix
        rule = err["type"]
        if rule == "value_error":
            # Our own validators put the rule name before a colon.
            msg = str(err.get("ctx", {}).get("error", err["msg"]))
            rule, _, msg = msg.partition(": ") if ": " in msg else ("invalid", "", msg)
        else:
            msg = err["msg"]
        out.append(FieldError(name, rule, msg))
    return out


class FeedbackData(Payload):
    """``io.driftloop.feedback.v1``: ground truth or a reward for one prediction."""

    prediction_id: StrictStr
    model: StrictStr
    version: StrictStr | None = None
    truth: Any = None
    reward: Any = None

    @field_validator("prediction_id")
    @classmethod
    def _prediction_id_safe(cls, v: str) -> str:
        if not is_safe_id(v):
            raise ValueError(f"safe-id: {SAFE_ID_RULE}")
        return v

    @field_validator("model")
    @classmethod
    def _model_safe(cls, v: str) -> str:
        if not is_safe_segment(v):
            raise ValueError(f"safe-name: {SAFE_NAME_RULE}")
        return v

    @field_validator("version")
    @classmethod
    def _version_safe(cls, v: str | None) -> str | None:
        if v is not None and not is_safe_segment(v):
            raise ValueError(f"safe-name: {SAFE_NAME_RULE}")
        return v

    @field_validator("reward")
    @classmethod
    def _reward_number(cls, v: Any) -> float | None:
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"number: reward must be a JSON number, got {type(v).__name__}")
        try:
            finite = math.isfinite(v)
        except OverflowError:
            finite = False
        if not finite:
            raise ValueError("finite: reward must be a finite number (not NaN or Infinity) "
                             "within the range of a double")
        return v

    @field_validator("truth")
    @classmethod
    def _truth_finite(cls, v: Any) -> Any:
        if not _all_finite(v):
            raise ValueError("finite: truth must not hold NaN or Infinity")
        return v

    @model_validator(mode="after")
    def _truth_or_reward(self) -> FeedbackData:
        if self.truth is None and self.reward is None:
            raise ValueError("truth-or-reward: at least one of truth or reward is required")
        return self


class PredictionData(Payload):
    """``io.driftloop.prediction.v1``: what a model answered for one input."""

    model: StrictStr
    version: StrictStr
    output: dict[str, Any]
    modality: StrictStr | None = None
    input_ref: StrictStr | None = None
    latency_ms: float | None = None


class DriftDetectedData(Payload):
    """``io.driftloop.drift.detected.v1``."""

    model: StrictStr
    version: StrictStr | None = None
    share_drifted: float | None = None
    features: dict[str, Any] = Field(default_factory=dict)


class RetrainRequestedData(Payload):
    """``io.driftloop.retrain.requested.v1``: which rules fired, with their values."""

    model: StrictStr
    run_id: StrictStr
    reasons: list[dict[str, Any]] = Field(default_factory=list)


class ModelTrainedData(Payload):
    """``io.driftloop.model.trained.v1``."""

    model: StrictStr
    version: StrictStr
    parent_version: StrictStr | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)


class ModelPromotedData(Payload):
    """``io.driftloop.model.promoted.v1``."""

    model: StrictStr
    version: StrictStr
    previous_version: StrictStr | None = None


class ModelRolledBackData(Payload):
    """``io.driftloop.model.rolledback.v1``."""

    model: StrictStr
    version: StrictStr
    restored_version: StrictStr | None = None
    reason: StrictStr = ""


PAYLOADS: dict[str, type[Payload]] = {
    FEEDBACK: FeedbackData,
    PREDICTION: PredictionData,
    DRIFT_DETECTED: DriftDetectedData,
    RETRAIN_REQUESTED: RetrainRequestedData,
    MODEL_TRAINED: ModelTrainedData,
    MODEL_PROMOTED: ModelPromotedData,
    MODEL_ROLLEDBACK: ModelRolledBackData,
}
