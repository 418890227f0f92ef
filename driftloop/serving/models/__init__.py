"""In-process models: load an artifact (files by name), predict on decoded inputs.

Each family's model class is the ``loader`` of its ``driftloop.catalogue`` entry.

Heavy libraries (pocketsphinx, OpenCV, tesseract, scikit-learn) are imported inside the
functions that need them, so the rest of driftloop imports without them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Protocol

from driftloop.catalogue import family
from driftloop.serving.inputs import InputLimits

# Loads run in worker threads; first imports of native packages (cv2 sets up its
# submodules lazily) are not thread-safe, so loads are serialised.
_LOAD_LOCK = threading.Lock()


class Model(Protocol):
    """What a runtime needs from a model family."""

    modality: str

    def predict(self, media: bytes | None, tensor: Any | None) -> dict[str, Any]:
        """One request's output; raise ``driftloop.errors.BadRequest`` for bad inputs."""
        ...


def load(name: str, artifact: Mapping[str, bytes], *,
         limits: InputLimits | None = None) -> Model:
    """The model ``name`` loaded from its registry artifact, checking inputs against
    ``limits`` (the defaults of ``InputLimits`` when not given); ``KeyError`` for a name
    the catalogue does not know."""
    with _LOAD_LOCK:
        return _load(name, artifact, limits=limits or InputLimits())


def _load(name: str, artifact: Mapping[str, bytes], *, limits: InputLimits) -> Model:
    model: Model = family(name).model_class().from_artifact(artifact, limits=limits)
    return model
