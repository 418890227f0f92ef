"""The names on the wire: CloudEvents ``type`` values and the content types of the bindings."""

from __future__ import annotations

from typing import Final

__all__ = [
    "BATCH",
    "DATAREF",
    "DRIFT_DETECTED",
    "FEEDBACK",
    "INPUT",
    "JSON",
    "LABELED",
    "MODEL_PROMOTED",
    "MODEL_ROLLEDBACK",
    "MODEL_TRAINED",
    "PING",
    "PREDICTION",
    "PREPROCESSED",
    "RETRAIN_REQUESTED",
    "SPECVERSION",
    "STRUCTURED",
]

SPECVERSION: Final = "1.0"

INPUT: Final = "io.driftloop.input.v1"
PREPROCESSED: Final = "io.driftloop.preprocessed.v1"
LABELED: Final = "io.driftloop.labeled.v1"
PREDICTION: Final = "io.driftloop.prediction.v1"
FEEDBACK: Final = "io.driftloop.feedback.v1"
DRIFT_DETECTED: Final = "io.driftloop.drift.detected.v1"
RETRAIN_REQUESTED: Final = "io.driftloop.retrain.requested.v1"
MODEL_TRAINED: Final = "io.driftloop.model.trained.v1"
MODEL_PROMOTED: Final = "io.driftloop.model.promoted.v1"
MODEL_ROLLEDBACK: Final = "io.driftloop.model.rolledback.v1"
PING: Final = "dev.knative.sources.ping"
"""Cron ticks from a Knative PingSource."""

DATAREF: Final = "dataref"
"""CloudEvents extension: where the data is when the event does not carry it (a raw input
above the sender's threshold: ``<blob url>/<key>`` in the blob store; claim check)."""

JSON: Final = "application/json"
STRUCTURED: Final = "application/cloudevents+json"
"""Structured content mode: the whole event is one JSON object."""
BATCH: Final = "application/cloudevents-batch+json"
"""Batch content mode: a JSON array of structured events."""
