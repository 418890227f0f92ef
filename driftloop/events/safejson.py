"""The one JSON parser for bodies and payloads from outside: bounded nesting, numbers a
double holds, UTF-8 without lone surrogates; every breach is a 4xx naming field and rule."""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from typing import Any

from driftloop.errors import BadRequest, FieldError, ValidationFailed

__all__ = [
    "MAX_DOUBLE",
    "MAX_JSON_DEPTH",
    "RejectedItem",
    "json_problems",
    "load_json",
    "parse_json",
]

MAX_JSON_DEPTH = 64
"""Default of ``Settings.max_json_depth``: the deepest nesting of arrays and objects parsed."""
MAX_DOUBLE = sys.float_info.max
"""Largest magnitude of a number accepted, integers included (rewards, drift values): what
every consumer can hold as a double."""
_MAX_DOUBLE_INT = int(MAX_DOUBLE)
_MAX_INT_DIGITS = len(str(_MAX_DOUBLE_INT))
_MAX_NUMBER_CHARS = 1000

_STRING_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")
# Text that may hold a number beyond a double's range: a run of 200+ digits, or an exponent
# of 3+ digits on a number token (not any "e123" inside an id); fewer than 200 integer digits
# with a 2-digit exponent stay below 1e299. Only then do the slower checking hooks run.
_LONG_NUMBER = re.compile(r"\d{200}|(?<![\w.+-])-?\d+(?:\.\d+)?[eE]\+?\d{3,}(?![\w.])")
_EXPONENT = re.compile(r"e\+?[0-9]{3}")
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_DIGIT_RUN = b"0" * 200
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
    return _Refused(
        "number-range",
        f"an integer of {digits} digits; numbers must lie within "
        f"±{MAX_DOUBLE:.17g} (what a double holds)",
    )


def _parse_float(text: str) -> float | _Refused:
    if len(text) > _MAX_NUMBER_CHARS:
        return _Refused(
            "number-range", f"a number of {len(text)} characters; at most {_MAX_NUMBER_CHARS}"
        )
    value = float(text)
    if math.isinf(value):
        return _Refused(
            "number-range", f"{text[:40]} is beyond ±{MAX_DOUBLE:.17g} (what a double holds)"
        )
    return value


def _too_deep(where: str, max_depth: int) -> BadRequest:
    rule = f"arrays and objects nest at most {max_depth} levels"
    return BadRequest(
        f"{where}: nested too deep ({rule})", fields=[FieldError(where, "max-depth", rule)]
    )


def _may_hold_long_number(text: str) -> bool:
    """False only where ``_LONG_NUMBER`` cannot match: ASCII text with neither 200 digits
    in a row nor an exponent of 3+ digits (every match holds one of the two). Found at C
    speed: the full pattern takes milliseconds on a batch of 100 events, this a tenth."""
    if not text.isascii():
        return True  # \d also takes other scripts' digits: leave those to the full pattern
    if _EXPONENT.search(text.lower()) is not None:
        return True
    return _DIGIT_RUN in text.encode("ascii").translate(_DIGITS_AS_ZERO)


def _containers(value: Any) -> tuple[int, int]:
    """How many arrays and objects ``value`` holds (itself included) and how deep they nest
    (level by level: the parser makes plain ``dict`` and ``list`` only)."""
    count = depth = 0
    level = [value]
    while level:
        count += len(level)
        depth += 1
        below: list[Any] = []
        for v in level:
            items = v.values() if type(v) is dict else v
            below.extend([x for x in items if type(x) is dict or type(x) is list])
        level = below
    return count, depth


def _depth_exceeds(text: str, max_depth: int, value: Any) -> bool:
    """Whether valid JSON ``text`` (parsed: ``value``) nests deeper than ``max_depth``.

    When the parsed value holds as many arrays and objects as the text has opening
    brackets, no bracket sits inside a string and no repeated key dropped a container,
    so the value's depth is the text's. Otherwise strings and scalars are dropped from the
    text, then innermost ``[]``/``{}`` pairs are removed one level per pass."""
    brackets = text.count("[") + text.count("{")
    if brackets <= max_depth:
        return False
    if isinstance(value, dict | list):
        count, depth = _containers(value)
        if count == brackets:
            return depth > max_depth
    skeleton = _NOT_BRACKET.sub("", _STRING_TOKEN.sub("", text))
    for _ in range(max_depth):
        if not skeleton:
            return False
        skeleton = _INNERMOST.sub("", skeleton)
    return bool(skeleton)


def parse_json(body: bytes | str, *, max_depth: int, where: str) -> tuple[Any, bool]:
    """Parse JSON under driftloop's limits; raise ``BadRequest`` naming ``where`` for a body
    that is not UTF-8 JSON or nests too deep. The flag says whether values may hold refused
    numbers or lone surrogates (then ``json_problems`` finds them)."""
    if isinstance(body, bytes | bytearray):
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRequest(
                f"{where}: not UTF-8 ({e.reason} at byte {e.start})",
                fields=[FieldError(where, "utf-8", "JSON must be UTF-8 text")],
            ) from e
    else:
        text = body
    numbers = _may_hold_long_number(text) and _LONG_NUMBER.search(text) is not None
    try:
        if numbers:
            value = json.loads(text, parse_int=_parse_int, parse_float=_parse_float)
        else:
            value = json.loads(text)
    except RecursionError as e:
        raise _too_deep(where, max_depth) from e
    except ValueError as e:  # JSONDecodeError, and anything int()/float() refuse
        raise BadRequest(
            f"{where}: not valid JSON ({e})",
            fields=[FieldError(where, "json", f"not valid JSON: {e}")],
        ) from e
    if _depth_exceeds(text, max_depth, value):
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
                problems.append(
                    FieldError(name, "unicode", "holds a lone surrogate (not Unicode text)")
                )
        elif isinstance(v, dict):
            for k, item in v.items():
                child = f"{path}.{k}" if path else str(k)
                if _SURROGATE.search(k):
                    problems.append(
                        FieldError(
                            path or "body",
                            "unicode",
                            "a key holds a lone surrogate (not Unicode text)",
                        )
                    )
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
    value, suspicious = parse_json(body, max_depth=max_depth, where=where)
    if suspicious:
        problems = json_problems(value, "" if where == "body" else where)
        if problems:
            raise ValidationFailed(problems)
    return value
