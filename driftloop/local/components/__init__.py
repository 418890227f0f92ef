"""Components of the local stack.

Each module in this package exposes ``components(settings) -> list[ComponentSpec]``;
the stack discovers them, starts them in ``order`` and waits for each to be healthy.
A module returns an empty list when its part is not installed (for example a
missing venv), so the stack runs with whatever has been set up.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from driftloop.settings import Settings


@dataclass(frozen=True)
class ComponentSpec:
    """How to start one process of the local stack and how to know it is ready."""

    name: str
    argv: Sequence[str]
    order: int
    endpoint: str
    """What clients use: ``host:port`` or a URL."""
    health: Callable[[], bool]
    """True once the process serves; called repeatedly while starting and by ``status``."""
    started: Callable[[], bool] | None = None
    """What starting waits for instead of ``health``, when the process serves only once
    others are up too (a node of a Kafka quorum: its controller listens; the quorum's last
    node waits for all of them in ``after_start``)."""
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    ports: Sequence[int] = ()
    """Loopback ports that must be free before start (a busy port is a clear error)."""
    start_timeout_s: float = 60.0
    prepare: Callable[[], None] | None = None
    """Runs before the process starts (format storage, write config)."""
    after_start: Callable[[], None] | None = None
    """Runs once the process is healthy (create topics, buckets)."""
    extra: Mapping[str, object] = field(default_factory=dict)
    """Shown by ``status --json`` beside the standard keys (e.g. pipelines, models)."""
    details: Callable[[], Mapping[str, object]] | None = None
    """What ``status`` adds while the process runs (e.g. Flink jobs and their checkpoints)."""
    metrics: str = ""
    """``host:port`` serving Prometheus ``/metrics`` ('' : none); the stack's Prometheus
    scrapes exactly the started components that set it, as job ``name``."""
    stop_group: str = ""
    """Components of one group ('' : none) are stopped together by ``down``: signalled at
    once, then awaited (the nodes of a Kafka quorum: stopped one after the other, the last
    finds no quorum to approve its controlled shutdown and is killed after the timeout)."""


def discover(settings: Settings) -> list[ComponentSpec]:
    """All components every module of this package declares, sorted by start order."""
    specs: list[ComponentSpec] = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        factory = getattr(module, "components", None)
        if factory is not None:
            specs.extend(factory(settings))
    return sorted(specs, key=lambda s: (s.order, s.name))


def selected(settings: Settings) -> list[ComponentSpec]:
    """The components ``driftloop up`` starts: all, or those ``settings.components`` names
    (a name without its number names the group: ``kafka``, ``flink-taskmanager``)."""
    from driftloop.errors import StackError

    wanted = set(settings.components)
    specs = discover(settings)
    unknown = {w for w in wanted if not any(_names(s.name, w) for s in specs)}
    if unknown:
        raise StackError(f"unknown components: {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(s.name for s in specs)})")
    return [s for s in specs if not wanted or any(_names(s.name, w) for w in wanted)]


def _names(name: str, wanted: str) -> bool:
    """``wanted`` is the component's name, or the name of its numbered group: ``kafka``
    names kafka-1, kafka-2 and kafka-3 of the 'ha' topology, ``flink-taskmanager`` every
    TaskManager."""
    head, _, number = name.rpartition("-")
    return name == wanted or (head == wanted and number.isdigit())
