"""Validation of names that become paths, blob keys or Kafka keys and topic parts."""

from __future__ import annotations

import re

SAFE_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")
SAFE_NAME_RULE = (
    "must be 1-64 characters of lowercase letters, digits, '.', '_' or '-', "
    "starting and ending with a letter or digit"
)


def is_safe_segment(name: object) -> bool:
    """True when ``name`` can be used as one path segment, blob key part and topic part."""
    return isinstance(name, str) and bool(SAFE_NAME.match(name)) and ".." not in name


def safe_segment(name: object, *, field: str = "name") -> str:
    """Return ``name`` unchanged when it is safe, else raise ``ValueError`` naming the rule."""
    if not is_safe_segment(name):
        raise ValueError(f"{field} {name!r} {SAFE_NAME_RULE}")
    return name  # type: ignore[return-value]
