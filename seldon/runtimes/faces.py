"""MLServer runtime of the ``faces`` model (see ``driftloop.serving.models.faces``)."""

from seldon.runtimes.base import DriftloopRuntime


class FacesRuntime(DriftloopRuntime):
    family = "faces"
