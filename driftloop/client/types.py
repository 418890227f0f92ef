"""The client's transport types: frozen, with ``to_dict``/``from_dict`` (JSON-ready)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from driftloop import events as ev
from driftloop.errors import FieldError
from driftloop.naming import is_safe_id

_UNSET: Any = object()


@dataclass(frozen=True)
class Feedback:
    """One feedback event. Its identity (``source``, ``id``) is fixed when it is built, so
    every retry of it carries the same identity and downstream dedup counts it once."""

    source: str
    prediction_id: str
    model: str
    version: str | None = None
    truth: Any = None
    reward: float | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def data(self) -> dict[str, Any]:
        d: dict[str, Any] = {"prediction_id": self.prediction_id, "model": self.model}
        if self.version is not None:
            d["version"] = self.version
        if self.truth is not None:
            d["truth"] = self.truth
        if self.reward is not None:
            d["reward"] = self.reward
        return d

    def to_event(self) -> ev.Event:
        return ev.new_event(ev.FEEDBACK, self.source, self.data(), id=self.id)

    def to_dict(self) -> dict[str, Any]:
        """The structured-mode CloudEvent (what a batch carries)."""
        return ev.to_structured(self.to_event())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Feedback:
        data = d.get("data") or {}
        return cls(source=str(d["source"]), id=str(d["id"]),
                   prediction_id=str(data.get("prediction_id")), model=str(data.get("model")),
                   version=data.get("version"), truth=data.get("truth"),
                   reward=data.get("reward"))


@dataclass(frozen=True)
class Accepted:
    """Intake's 202: the event is durable in Kafka under (source, id)."""

    source: str
    id: str

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "id": self.id}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Accepted:
        return cls(source=str(d["source"]), id=str(d["id"]))


@dataclass(frozen=True)
class ItemResult:
    """One event of a batch: 202, or the status and broken rules that refused it."""

    index: int
    id: str | None
    status: int
    error: str | None = None
    fields: tuple[FieldError, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.status == 202

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"index": self.index, "id": self.id, "status": self.status}
        if self.error:
            d["error"] = self.error
        if self.fields:
            d["fields"] = [f.to_dict() for f in self.fields]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ItemResult:
        ident = d.get("id")
        return cls(index=int(d["index"]), id=ident if is_safe_id(ident) else None,
                   status=int(d["status"]), error=d.get("error") or d.get("message"),
                   fields=parse_fields(d.get("fields")))


@dataclass(frozen=True)
class BatchResult:
    """What happened to each event of a batch, in the order sent."""

    source: str
    items: tuple[ItemResult, ...]

    @property
    def accepted(self) -> int:
        return sum(i.accepted for i in self.items)

    @property
    def rejected(self) -> tuple[ItemResult, ...]:
        return tuple(i for i in self.items if not i.accepted)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "accepted": self.accepted,
                "items": [i.to_dict() for i in self.items]}


def parse_fields(raw: Any) -> tuple[FieldError, ...]:
    """The server's ``fields`` list as ``FieldError``s (anything malformed is skipped)."""
    if not isinstance(raw, list):
        return ()
    return tuple(FieldError(str(f.get("field", "")), str(f.get("rule", "")),
                            str(f.get("message", "")))
                 for f in raw if isinstance(f, Mapping))
