"""predictions ⋈ feedback on prediction_id: the per-key state machine, without Flink.

Per prediction id the state holds the prediction (once seen), feedback waiting for it,
the feedback already matched (for de-duplication) and the deadline of the window, which
opens with the first record of the key. Either side may come first. When the deadline
passes, waiting feedback is dead-lettered and an unanswered prediction is counted; the
key's state is then dropped, so anything later for it opens a new window.

State is a plain JSON-able dict so the Flink job can keep it in one ValueState.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from driftloop import events, quality
from driftloop.errors import DriftloopError
from driftloop.events import LABELED

SOURCE = "driftloop/flink/join"

PREDICTION = "p"
FEEDBACK = "f"


@dataclass(frozen=True)
class Output:
    """A labeled record or a dead letter (``reason`` set) or a counter bump (``counter``)."""

    kind: str
    """``labeled``, ``deadletter`` or ``count``."""
    event: events.Event | None = None
    raw: str | None = None
    """The structured JSON of the record a dead letter is about."""
    reason: str | None = None
    counter: str | None = None


def parse_side(side: str, event: events.Event) -> tuple[str, dict[str, Any]]:
    """The join key and the structured form of one input; raises ``DriftloopError``."""
    if side == PREDICTION:
        if event.type != events.PREDICTION:
            raise DriftloopError(f"type {event.type!r} is not {events.PREDICTION}")
        events.PredictionData.parse(event.data)
        return event.id, events.to_structured(event)
    if event.type != events.FEEDBACK:
        raise DriftloopError(f"type {event.type!r} is not {events.FEEDBACK}")
    fb = events.FeedbackData.parse(event.data)
    return fb.prediction_id, events.to_structured(event)


def _feedback_key(fb: dict[str, Any]) -> str:
    return f"{fb['source']}\x00{fb['id']}"


def labeled_event(prediction: dict[str, Any], feedback: dict[str, Any]) -> events.Event:
    """The labeled record: prediction output, feedback truth/reward and per-record quality."""
    p, f = prediction.get("data") or {}, feedback.get("data") or {}
    model = str(p.get("model") or f.get("model"))
    truth = f.get("truth")
    out = p.get("output") or {}
    data: dict[str, Any] = {
        "prediction_id": prediction["id"],
        "feedback_id": feedback["id"],
        "feedback_source": feedback["source"],
        "model": model,
        "version": p.get("version"),
        "modality": p.get("modality"),
        "input_ref": p.get("input_ref"),
        "output": out,
        "truth": truth,
        "reward": f.get("reward"),
        "prediction_time": prediction.get("time"),
        "feedback_time": feedback.get("time"),
        "metric": None,
        "quality": None,
    }
    if truth is not None and model in quality.MODELS:
        data["metric"] = quality.MODELS[model].metric
        try:
            data["quality"] = quality.score(model, out, truth)
        except (ValueError, TypeError, KeyError, IndexError) as e:
            data["quality_error"] = str(e)
    time = events.parse_time(feedback["time"]) if feedback.get("time") else None
    return events.Event(
        id=feedback["id"], source=SOURCE, type=LABELED, data=data, time=time,
        datacontenttype=events.JSON, extensions={"model": model},
    )


def empty_state() -> dict[str, Any]:
    return {"prediction": None, "pending": {}, "matched": [], "deadline": None}


def on_record(
    state: dict[str, Any], side: str, record: dict[str, Any], now_ms: int, window_ms: int
) -> tuple[dict[str, Any], list[Output], int | None]:
    """Feed one record of key's stream; returns new state, outputs, and a timer to set."""
    outputs: list[Output] = []
    timer = None
    if state["deadline"] is None:
        state["deadline"] = now_ms + window_ms
        timer = state["deadline"]
    if side == PREDICTION:
        if state["prediction"] is not None:
            return state, [Output("count", counter="duplicate_predictions")], timer
        state["prediction"] = record
        for key, fb in sorted(state["pending"].items()):
            outputs.append(Output("labeled", labeled_event(record, fb)))
            state["matched"].append(key)
        state["pending"] = {}
        return state, outputs, timer
    key = _feedback_key(record)
    if key in state["pending"] or key in state["matched"]:
        return state, [Output("count", counter="duplicate_feedback")], timer
    if state["prediction"] is None:
        state["pending"][key] = record
        return state, outputs, timer
    state["matched"].append(key)
    return state, [Output("labeled", labeled_event(state["prediction"], record))], timer


def on_timer(state: dict[str, Any], window_ms: int) -> list[Output]:
    """The window closed: dead-letter waiting feedback, count an unanswered prediction."""
    outputs = [
        Output("deadletter", raw=json.dumps(fb), reason=(
            f"unmatched_feedback: no prediction {fb['data'].get('prediction_id')!r} "
            f"within {window_ms / 1000:g} s"))
        for _, fb in sorted(state["pending"].items())
    ]
    if state["prediction"] is not None and not state["matched"]:
        outputs.append(Output("count", counter="unmatched_predictions"))
    return outputs
