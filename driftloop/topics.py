"""Kafka topic names (DESIGN.md contracts). Names are built here and nowhere else."""

from __future__ import annotations

from driftloop.naming import safe_segment

PREFIX = "driftloop"
MODALITIES: tuple[str, ...] = ("audio", "image")

PREDICTIONS = f"{PREFIX}.predictions"
FEEDBACK = f"{PREFIX}.feedback"
LABELED = f"{PREFIX}.labeled"
EVENTS = f"{PREFIX}.events"
DEADLETTER = f"{PREFIX}.deadletter"


def raw(modality: str) -> str:
    """Topic carrying raw inputs of one modality."""
    return f"{PREFIX}.raw.{safe_segment(modality, field='modality')}"


def preprocessed(modality: str) -> str:
    """Topic carrying model-ready inputs of one modality."""
    return f"{PREFIX}.preprocessed.{safe_segment(modality, field='modality')}"


def all_topics() -> list[str]:
    """Every topic the local stack creates."""
    per_modality = [t for m in MODALITIES for t in (raw(m), preprocessed(m))]
    return [*per_modality, PREDICTIONS, FEEDBACK, LABELED, EVENTS, DEADLETTER]
