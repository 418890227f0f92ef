"""MLServer runtimes: one ``MLModel`` subclass per model family, over ``driftloop.serving``.

MLServer imports these by dotted path (``seldon.runtimes.speech.SpeechRuntime``), so the
repository root must be on ``PYTHONPATH`` of the server process (the local stack and
the image both arrange that).
"""

RUNTIMES: dict[str, str] = {
    "speech": "seldon.runtimes.speech.SpeechRuntime",
    "ocr": "seldon.runtimes.ocr.OcrRuntime",
    "faces": "seldon.runtimes.faces.FacesRuntime",
    "digits": "seldon.runtimes.digits.DigitsRuntime",
}
