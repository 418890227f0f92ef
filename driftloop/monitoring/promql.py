"""Which metrics a PromQL expression reads: lets a test hold the dashboard and the alert rules
to the metrics the running stack exposes, so neither silently reads a name nobody serves."""

from __future__ import annotations

import re

_KEYWORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan",
})
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """Metric names in ``expr``: identifiers that are not functions, keywords, label names
    (in matchers or groupings), strings, durations or dashboard variables."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values, regexes)
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # range and subquery durations
    s = re.sub(r"\$\{?\w+\}?", " ", s)  # dashboard variables
    s = _GROUPING.sub(" ", s)
    names = set()
    for m in _IDENT.finditer(s):
        rest = s[m.end():].lstrip()
        before = s[:m.start()]
        if rest.startswith("(") or m.group() in _KEYWORDS:
            continue
        if before and (before[-1].isdigit() or before[-1] == "."):
            continue  # the exponent or unit of a number (1e3, 5m)
        names.add(m.group())
    return names
