"""Option callbacks shared by the commands: names checked before anything uses them."""

from __future__ import annotations

import typer

from driftloop.naming import SAFE_NAME_RULE, is_safe_segment


def safe_name(value: str | None) -> str | None:
    """A model name or run id that is safe as a path, blob key and URL segment."""
    if value is not None and not is_safe_segment(value):
        raise typer.BadParameter(f"{value!r} {SAFE_NAME_RULE}")
    return value


def safe_version(value: str | None) -> str | None:
    """A version number or alias (no path characters)."""
    if value is not None and not is_safe_segment(value):
        raise typer.BadParameter(f"{value!r} is not a version number or alias")
    return value
