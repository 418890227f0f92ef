"""What the promote service reads and records (pure): the version and model rules a
request must meet, a ``model.trained`` event's (model, version), and the two records
kept in the blob store - a version's ``Promotion`` and a model's ``Lease``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from driftloop import events as ev
from driftloop.errors import BadRequest, FieldError, ValidationFailed
from driftloop.naming import SAFE_NAME_RULE, is_safe_segment

Phase = Literal[
    "gate", "rejected", "shadow", "canary", "promoted", "rolledback", "gated", "abandoned"
]
LeaseAction = Literal["promotion", "promote", "rollback"]
FINAL: frozenset[str] = frozenset({"rejected", "promoted", "rolledback", "gated", "abandoned"})
VERSION = re.compile(r"[1-9][0-9]{0,17}")
VERSION_RULE = "a registry version: a positive integer without leading zeros, 1-18 digits"


def check_version(value: Any, *, field: str = "version") -> str:
    """``value`` when it is a registry version, else a 400 naming the field and rule."""
    if not isinstance(value, str) or not VERSION.fullmatch(value):
        raise ValidationFailed([FieldError(field, "version", VERSION_RULE)])
    return value


def check_model(value: Any) -> str:
    """``value`` when it is a safe model name, else a 400 naming the rule."""
    if not is_safe_segment(value):
        raise BadRequest(
            "model: a valid model name is required",
            fields=[FieldError("model", "safe-name", SAFE_NAME_RULE)],
        )
    return str(value)


def trained_version(event: ev.Event) -> tuple[str, str]:
    """(model, version) of a ``model.trained`` event; every broken rule of its data (model
    name, version, parent version) is refused at once."""
    if event.type != ev.MODEL_TRAINED:
        raise BadRequest(
            f"event type {event.type!r} is not {ev.MODEL_TRAINED}",
            fields=[FieldError("type", "supported", "only model.trained starts a promotion")],
        )
    data = ev.ModelTrainedData.parse(event.data)
    errors = []
    if not is_safe_segment(data.model):
        errors.append(FieldError("data.model", "safe-name", SAFE_NAME_RULE))
    for name, value in (("version", data.version), ("parent_version", data.parent_version)):
        if (value is not None or name == "version") and not VERSION.fullmatch(value or ""):
            errors.append(FieldError(f"data.{name}", "version", VERSION_RULE))
    if errors:
        raise ValidationFailed(errors)
    return data.model, data.version


@dataclass(frozen=True)
class Promotion:
    """One version's way through gate, canary and bake."""

    model: str
    version: str
    champion: str | None
    """The champion this version was measured against, and replaced if promoted."""
    phase: Phase
    started: str
    canary_started_ms: int | None = None
    shadow_started_ms: int | None = None
    gate: dict[str, Any] | None = None
    verdicts: tuple[dict[str, Any], ...] = ()
    reason: str = ""
    finished: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["verdicts"] = list(self.verdicts)[-20:]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Promotion:
        return cls(**{**d, "verdicts": tuple(d.get("verdicts") or ())})


@dataclass(frozen=True)
class Lease:
    """Who holds a model's promotion: a version and what is being done with it."""

    model: str
    version: str
    action: LeaseAction
    since: str
    nonce: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


__all__ = [
    "FINAL",
    "VERSION",
    "VERSION_RULE",
    "Lease",
    "LeaseAction",
    "Phase",
    "Promotion",
    "check_model",
    "check_version",
    "trained_version",
]
