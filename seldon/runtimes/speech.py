"""MLServer runtime of the ``speech`` model (see ``driftloop.serving.models.speech``)."""

from seldon.runtimes.base import DriftloopRuntime


class SpeechRuntime(DriftloopRuntime):
    family = "speech"
