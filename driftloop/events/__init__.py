"""CloudEvents 1.0 for driftloop, one binding per module (the cloudevents SDK's layout):

- ``types``: event types and content types;
- ``model``: ``Event``, ``new_event``, RFC 3339 times, the data codec;
- ``safejson``: the bounded JSON parser every body and payload goes through;
- ``media``: the one Content-Type parser;
- ``http``: binary, structured and batch HTTP modes, and the JSON event format;
- ``kafka``: the Kafka protocol binding (binary mode out, binary and structured in);
- ``payloads``: the ``data`` models of each event type.

Import from here (``from driftloop import events as ev``); the submodules are the layout.
"""

from __future__ import annotations

from driftloop.events.http import (
    from_http,
    from_structured,
    split_batch,
    to_http_binary,
    to_http_structured,
    to_structured,
)
from driftloop.events.kafka import KafkaRecord, from_kafka, to_kafka
from driftloop.events.model import Event, format_time, new_event, parse_time
from driftloop.events.payloads import (
    DriftDetectedData,
    FeedbackData,
    LabeledData,
    ModelPromotedData,
    ModelRolledBackData,
    ModelTrainedData,
    Payload,
    PredictionData,
    RetrainRequestedData,
    pydantic_field_errors,
)
from driftloop.events.safejson import MAX_DOUBLE, RejectedItem, load_json
from driftloop.events.types import (
    BATCH,
    DATAREF,
    DRIFT_DETECTED,
    FEEDBACK,
    INPUT,
    JSON,
    LABELED,
    MODEL_PROMOTED,
    MODEL_ROLLEDBACK,
    MODEL_TRAINED,
    PING,
    PREDICTION,
    PREPROCESSED,
    RETRAIN_REQUESTED,
    SPECVERSION,
    STRUCTURED,
)

__all__ = [
    "BATCH",
    "DATAREF",
    "DRIFT_DETECTED",
    "FEEDBACK",
    "INPUT",
    "JSON",
    "LABELED",
    "MAX_DOUBLE",
    "MODEL_PROMOTED",
    "MODEL_ROLLEDBACK",
    "MODEL_TRAINED",
    "PING",
    "PREDICTION",
    "PREPROCESSED",
    "RETRAIN_REQUESTED",
    "SPECVERSION",
    "STRUCTURED",
    "DriftDetectedData",
    "Event",
    "FeedbackData",
    "KafkaRecord",
    "LabeledData",
    "ModelPromotedData",
    "ModelRolledBackData",
    "ModelTrainedData",
    "Payload",
    "PredictionData",
    "RejectedItem",
    "RetrainRequestedData",
    "format_time",
    "from_http",
    "from_kafka",
    "from_structured",
    "load_json",
    "new_event",
    "parse_time",
    "pydantic_field_errors",
    "split_batch",
    "to_http_binary",
    "to_http_structured",
    "to_kafka",
    "to_structured",
]
