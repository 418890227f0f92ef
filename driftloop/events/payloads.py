"""The ``data`` of each driftloop event type as a pydantic model: consumers ``parse`` it (every
field error reported at once, named and ruled), producers build it and send ``to_data()``.

Every key a driftloop producer sends is declared here; unknown keys from other producers
are kept (``extra="allow"``) so a newer producer does not break an older consumer."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    field_validator,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError

from driftloop.errors import FieldError, ValidationFailed
from driftloop.naming import SAFE_ID_RULE, SAFE_NAME_RULE, is_safe_id, is_safe_segment

__all__ = [
    "DriftDetectedData",
    "FeedbackData",
    "LabeledData",
    "ModelPromotedData",
    "ModelRolledBackData",
    "ModelTrainedData",
    "Payload",
    "PredictionData",
    "RetrainRequestedData",
    "pydantic_field_errors",
]


def _all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Mapping):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_all_finite(v) for v in value)
    return True


class Payload(BaseModel):
    """Base of the ``data`` models: unknown keys are kept, values must be JSON types."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @classmethod
    def parse(cls, data: Any, *, prefix: str = "data") -> Self:
        """Validate ``data``; raise ``ValidationFailed`` naming every bad field and rule."""
        if not isinstance(data, Mapping):
            raise ValidationFailed(
                [FieldError(prefix, "object", f"{prefix} must be a JSON object")]
            )
        try:
            return cls.model_validate(dict(data))
        except PydanticValidationError as e:
            raise ValidationFailed(pydantic_field_errors(e, prefix=prefix)) from e

    def to_data(self) -> dict[str, Any]:
        """The event's ``data`` object: the fields the producer set (a default it did not
        pass stays off the wire, an explicit ``None`` is sent as ``null``)."""
        return self.model_dump(exclude_unset=True)


def pydantic_field_errors(error: PydanticValidationError, *, prefix: str) -> list[FieldError]:
    """Pydantic's errors as ``FieldError``s: dotted field path, rule name, message."""
    out = []
    for err in error.errors():
        loc = ".".join(str(p) for p in err["loc"] if p != "__root__")
        name = f"{prefix}.{loc}" if loc else prefix
        rule = err["type"]
        if rule == "value_error":
            # Our own validators put the rule name before a colon.
            msg = str(err.get("ctx", {}).get("error", err["msg"]))
            rule, _, msg = msg.partition(": ") if ": " in msg else ("invalid", "", msg)
        else:
            msg = err["msg"]
        out.append(FieldError(name, rule, msg))
    return out


class FeedbackData(Payload):
    """``io.driftloop.feedback.v1``: ground truth or a reward for one prediction."""

    prediction_id: StrictStr
    model: StrictStr
    version: StrictStr | None = None
    truth: Any = None
    reward: Any = None

    @field_validator("prediction_id")
    @classmethod
    def _prediction_id_safe(cls, v: str) -> str:
        if not is_safe_id(v):
            raise ValueError(f"safe-id: {SAFE_ID_RULE}")
        return v

    @field_validator("model")
    @classmethod
    def _model_safe(cls, v: str) -> str:
        if not is_safe_segment(v):
            raise ValueError(f"safe-name: {SAFE_NAME_RULE}")
        return v

    @field_validator("version")
    @classmethod
    def _version_safe(cls, v: str | None) -> str | None:
        if v is not None and not is_safe_segment(v):
            raise ValueError(f"safe-name: {SAFE_NAME_RULE}")
        return v

    @field_validator("reward")
    @classmethod
    def _reward_number(cls, v: Any) -> float | None:
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"number: reward must be a JSON number, got {type(v).__name__}")
        try:
            finite = math.isfinite(v)
        except OverflowError:
            finite = False
        if not finite:
            raise ValueError(
                "finite: reward must be a finite number (not NaN or Infinity) "
                "within the range of a double"
            )
        return v

    @field_validator("truth")
    @classmethod
    def _truth_finite(cls, v: Any) -> Any:
        if not _all_finite(v):
            raise ValueError("finite: truth must not hold NaN or Infinity")
        return v

    @model_validator(mode="after")
    def _truth_or_reward(self) -> Self:
        if self.truth is None and self.reward is None:
            raise ValueError("truth-or-reward: at least one of truth or reward is required")
        return self


class PredictionData(Payload):
    """``io.driftloop.prediction.v1``: what a model answered for one input."""

    model: StrictStr
    version: StrictStr
    output: dict[str, Any]
    modality: StrictStr | None = None
    input_ref: StrictStr | None = None
    latency_ms: float | None = None
    shadow: StrictBool = False
    """A mirrored request's answer, never returned to the app: out of user-facing
    quality and drift (``driftloop.promotion.shadow``)."""
    shadow_of: StrictStr | None = None
    """For a shadow answer: the id of the champion's prediction of the same request."""


class LabeledData(Payload):
    """``io.driftloop.labeled.v1``: a prediction joined with its latest feedback."""

    prediction_id: StrictStr
    feedback_id: StrictStr
    feedback_source: StrictStr
    """With ``feedback_id``, the feedback's identity (the labeled record's id derives from it)."""
    model: StrictStr
    version: StrictStr | None = None
    modality: StrictStr | None = None
    input_ref: StrictStr | None = None
    output: dict[str, Any] = Field(default_factory=dict)
    truth: Any = None
    reward: int | float | None = None
    prediction_time: StrictStr | None = None
    feedback_time: StrictStr | None = None
    """RFC 3339; orders corrections (the latest feedback by event time is the label)."""
    correction: StrictBool = False
    """Whether this record replaces an earlier label of the same prediction."""
    metric: StrictStr | None = None
    """The model's declared quality metric (``quality.MODELS``), when it has one."""
    quality: float | None = None
    """The record's score under ``metric``; None when unscored."""
    quality_error: StrictStr | None = None
    """Why the record could not be scored (too large, output and truth do not compare)."""


class DriftDetectedData(Payload):
    """``io.driftloop.drift.detected.v1``."""

    model: StrictStr
    version: StrictStr | None = None
    share_drifted: float | None = None
    dataset_drift: StrictBool | None = None
    """The check's verdict; retrain-trigger reads it (absent means drifted)."""
    drift_share: float | None = None
    """The share of drifted features above which the dataset counts as drifted."""
    features: dict[str, Any] = Field(default_factory=dict)
    window: dict[str, Any] = Field(default_factory=dict)
    """What was checked: ``rows`` and the record counts by kind."""


class RetrainRequestedData(Payload):
    """``io.driftloop.retrain.requested.v1``: which rules fired, with their values."""

    model: StrictStr
    run_id: StrictStr
    reasons: list[dict[str, Any]] = Field(default_factory=list)
    trigger: StrictStr = ""
    """What asked for the check (drift event, alert, schedule)."""
    backend: StrictStr = ""
    """Where the run trains (``local``, ``kfp``, ``airflow``...)."""
    explain: StrictStr = ""
    """The decision in one sentence, for people reading the event log."""


class ModelTrainedData(Payload):
    """``io.driftloop.model.trained.v1``."""

    model: StrictStr
    version: StrictStr
    parent_version: StrictStr | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    run_id: StrictStr | None = None
    """The retrain run that trained it (None for a run started by hand)."""


class ModelPromotedData(Payload):
    """``io.driftloop.model.promoted.v1``."""

    model: StrictStr
    version: StrictStr
    previous_version: StrictStr | None = None
    reason: StrictStr = ""
    """Why it was promoted (the canary verdict, or by hand)."""


class ModelRolledBackData(Payload):
    """``io.driftloop.model.rolledback.v1``."""

    model: StrictStr
    version: StrictStr
    restored_version: StrictStr | None = None
    reason: StrictStr = ""
    stage: StrictStr | None = None
    """Where it was stopped: ``gate`` (offline), ``canary`` or ``champion``."""
