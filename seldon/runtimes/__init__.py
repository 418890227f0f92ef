"""MLServer runtimes: one ``MLModel`` subclass per model family, over ``driftloop.serving``.

MLServer imports these by dotted path (``seldon.runtimes.speech.SpeechRuntime``, the
``runtime`` of each ``driftloop.catalogue`` entry), so the repository root must be on
``PYTHONPATH`` of the server process (the local stack and the image both arrange that).
The per-family modules and classes are made from the catalogue when this package is
imported (``seldon.runtimes.families``); only ``base.DriftloopRuntime`` is written out.
"""

from driftloop.catalogue import FAMILIES
from seldon.runtimes.families import install

__all__ = ["RUNTIMES"]

RUNTIMES: dict[str, str] = {name: entry.runtime for name, entry in FAMILIES.items()}
"""Each family's runtime class path, as MLServer's model settings name it."""

install()
