"""Validation of names that become paths, blob keys or Kafka keys and topic parts, and of
the ids apps send (CloudEvent id and source, prediction ids).

Every check is a full match: ``re.match`` with ``$`` would let a trailing newline through.
"""

from __future__ import annotations

import re
from typing import TypeGuard

SAFE_NAME = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?")
SAFE_NAME_RULE = (
    "must be 1-64 characters of lowercase letters, digits, '.', '_' or '-', "
    "starting and ending with a letter or digit"
)

MAX_ID_LENGTH = 256
SAFE_ID = re.compile(rf"[!-~]{{1,{MAX_ID_LENGTH}}}")
SAFE_ID_RULE = (
    f"must be 1-{MAX_ID_LENGTH} printable ASCII characters (0x21-0x7E: no spaces, "
    "control characters or non-ASCII)"
)


def is_safe_segment(name: object) -> TypeGuard[str]:
    """True when ``name`` can be used as one path segment, blob key part and topic part."""
    return isinstance(name, str) and SAFE_NAME.fullmatch(name) is not None and ".." not in name


def safe_segment(name: object, *, field: str = "name") -> str:
    """Return ``name`` unchanged when it is safe, else raise ``ValueError`` naming the rule."""
    if not is_safe_segment(name):
        raise ValueError(f"{field} {name!r} {SAFE_NAME_RULE}")
    return name


def is_safe_id(value: object) -> bool:
    """True when ``value`` is an id driftloop carries through Kafka headers, keys, logs and
    Flink state without escaping: printable ASCII, bounded length."""
    return isinstance(value, str) and SAFE_ID.fullmatch(value) is not None
