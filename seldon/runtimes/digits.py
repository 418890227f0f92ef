"""MLServer runtime of the ``digits`` model (see ``driftloop.serving.models.digits``)."""

from seldon.runtimes.base import DriftloopRuntime


class DigitsRuntime(DriftloopRuntime):
    family = "digits"
