"""One MLServer runtime class per ``driftloop.catalogue`` family, made from its entry.

MLServer imports a model's runtime by the dotted path in its model settings,
``seldon.runtimes.<family>.<Family>Runtime`` (``Family.runtime``; the registry writes it
into every version's ``model-settings.json``, so the path is a stored contract). No file
is written per family: ``install()`` puts a module of that name in ``sys.modules`` for each
entry, holding a ``DriftloopRuntime`` subclass whose ``family`` is the entry's name.
``seldon.runtimes`` calls it when it is imported, which every import of a runtime path
does first, so MLServer's import (in the server and in any worker process) finds them.
"""

from __future__ import annotations

import importlib.util
import sys
import types

from driftloop.catalogue import FAMILIES, Family
from seldon.runtimes.base import DriftloopRuntime

__all__ = ["install", "runtime_class"]

PACKAGE = "seldon.runtimes"


def runtime_class(entry: Family) -> type[DriftloopRuntime]:
    """The runtime of ``entry``: a ``DriftloopRuntime`` serving that family."""
    module = f"{PACKAGE}.{entry.name}"
    return type(
        entry.runtime_class,
        (DriftloopRuntime,),
        {
            "family": entry.name,
            "__module__": module,
            "__qualname__": entry.runtime_class,
            "__doc__": f"MLServer runtime of the ``{entry.name}`` family ({entry.loader}).",
        },
    )


def install() -> dict[str, type[DriftloopRuntime]]:
    """Register ``seldon.runtimes.<family>`` for every family (idempotent); the classes."""
    package = sys.modules[PACKAGE]
    made: dict[str, type[DriftloopRuntime]] = {}
    for entry in FAMILIES.values():
        name = f"{PACKAGE}.{entry.name}"
        existing = sys.modules.get(name)
        if existing is not None and getattr(existing, "_driftloop_family", None) == entry.name:
            made[entry.name] = getattr(existing, entry.runtime_class)
            continue
        if existing is not None or importlib.util.find_spec(name) is not None:
            raise RuntimeError(
                f"family {entry.name!r} would hide the module {name}: rename the family"
            )
        cls = runtime_class(entry)
        module = types.ModuleType(name, cls.__doc__)
        setattr(module, entry.runtime_class, cls)
        module._driftloop_family = entry.name  # type: ignore[attr-defined]
        module.__all__ = [entry.runtime_class]  # type: ignore[attr-defined]
        sys.modules[name] = module
        setattr(package, entry.name, module)
        made[entry.name] = cls
    return made
