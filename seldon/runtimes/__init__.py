"""MLServer runtimes: one ``MLModel`` subclass per model family, over ``driftloop.serving``.

MLServer imports these by dotted path (``seldon.runtimes.speech.SpeechRuntime``, as
declared in ``driftloop.quality.MODELS``), so the repository root must be on
``PYTHONPATH`` of the server process (the local stack and the image both arrange that).
"""

from driftloop.quality import MODELS

RUNTIMES: dict[str, str] = {name: spec.runtime for name, spec in MODELS.items() if spec.runtime}
