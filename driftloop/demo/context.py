"""What every demo step takes: settings, a console, the running stack's endpoints, and
the summary it adds its figures to."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from driftloop.settings import Settings

__all__ = ["DemoContext", "Step", "progress_bar"]


@dataclass
class DemoContext:
    settings: Settings
    console: Console
    endpoints: dict[str, str]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def kafka_settings(self) -> Settings:
        return self.settings.model_copy(update={"kafka_bootstrap": self.endpoints["kafka"]})


Step = Callable[[DemoContext], None]
"""A step shows what flows where and records its figures in ``ctx.summary``; its
docstring's first line is its heading."""


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
