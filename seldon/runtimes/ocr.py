"""MLServer runtime of the ``ocr`` model (see ``driftloop.serving.models.ocr``)."""

from seldon.runtimes.base import DriftloopRuntime


class OcrRuntime(DriftloopRuntime):
    family = "ocr"
