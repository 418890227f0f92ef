"""predictions ⋈ feedback on prediction_id: the per-key state machine, without Flink.

Per prediction id the state holds the prediction (once seen), feedback waiting for it,
the (source, id) of every feedback already handled (for de-duplication), the order key of
the label emitted so far and the deadline of the current phase:

- ``window`` opens with the first record of the key; either side may come first. When it
  closes, waiting feedback is dead-lettered (``unmatched_feedback``) and an unanswered
  prediction is counted; the key is dropped, so anything later opens a new window.
- ``corrections``: a prediction that got a label stays ``keep_ms`` longer, so a correction
  arriving after the window still finds it.

One label per prediction: a feedback newer (event time, then (source, id); see
``driftloop.labeled``) than the current label is emitted as a correction, an older one is
counted (``superseded_feedback``), never emitted. Feedback naming another model, or another
version when it names one, is dead-lettered (``model_mismatch``). State is a plain JSON-able
dict so the Flink job keeps it in one ValueState.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from driftloop import catalogue, events, labeled, quality, topics
from driftloop.errors import DriftloopError
from driftloop.events import LABELED
from flink.transforms.deadletter import Origin, Record, dead_letter, record_size

SOURCE = "driftloop/flink/join"

PREDICTION = "p"
FEEDBACK = "f"

INVALID_PREDICTION = "invalid_prediction"
INVALID_FEEDBACK = "invalid_feedback"
UNMATCHED_FEEDBACK = "unmatched_feedback"
MODEL_MISMATCH = "model_mismatch"
TOO_LARGE = "too_large"
UNENCODABLE = "unencodable"
INTERNAL = "internal"

MAX_SCORE_CELLS = 4_000_000
"""Output size times truth size above which quality is not computed (``quality_error``): edit
distances cost their product, and a record must not hold the stream for minutes."""


@dataclass(frozen=True)
class JoinConfig:
    window_ms: int
    keep_ms: int = 0
    """How long a labeled prediction stays after its window for late corrections."""
    max_record_bytes: int = 1024 * 1024
    """The agreed Kafka record limit: a bigger labeled record is dead-lettered."""
    max_dead_letter_value_bytes: int = 256 * 1024


@dataclass(frozen=True)
class Output:
    """A labeled record or a dead letter (``reason`` set) or a counter bump (``counter``)."""

    kind: str
    """``labeled``, ``deadletter`` or ``count``."""
    event: events.Event | None = None
    raw: str | None = None
    """The structured JSON of the feedback a dead letter (or a labeled record) is about."""
    reason: str | None = None
    counter: str | None = None
    origin: dict[str, Any] | None = None
    """Where the record a dead letter is about was read (topic, partition, offset)."""


def _finite(v: Any) -> bool:
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, dict):
        return all(_finite(x) for x in v.values())
    if isinstance(v, list):
        return all(_finite(x) for x in v)
    return True


def parse_side(side: str, event: events.Event) -> tuple[str, dict[str, Any]]:
    """The join key and the structured form of one input; raises ``DriftloopError``."""
    if side == PREDICTION:
        if event.type != events.PREDICTION:
            raise DriftloopError(f"type {event.type!r} is not {events.PREDICTION}")
        p = events.PredictionData.parse(event.data)
        if not _finite(p.output):
            raise DriftloopError("finite: output holds NaN or Infinity")
        return event.id, events.to_structured(event)
    if event.type != events.FEEDBACK:
        raise DriftloopError(f"type {event.type!r} is not {events.FEEDBACK}")
    fb = events.FeedbackData.parse(event.data)
    return fb.prediction_id, events.to_structured(event)


def _feedback_key(fb: dict[str, Any]) -> str:
    return f"{fb['source']}\x00{fb['id']}"


def _order(fb: dict[str, Any]) -> list[str]:
    """The correction order of a feedback record, JSON-able (time as RFC 3339)."""
    t = labeled.order_key({"feedback_time": fb.get("time"), "feedback_source": fb["source"],
                           "feedback_id": fb["id"]})
    return [t[0].isoformat(), t[1], t[2]]


def mismatch(prediction: dict[str, Any], feedback: dict[str, Any]) -> str | None:
    """Why this feedback cannot label this prediction (other model or version), or None."""
    p, f = prediction.get("data") or {}, feedback.get("data") or {}
    if f.get("model") != p.get("model"):
        return (f"feedback {feedback['id']!r} names model {f.get('model')!r} but prediction "
                f"{prediction['id']!r} is model {p.get('model')!r}")
    if f.get("version") is not None and str(f["version"]) != str(p.get("version")):
        return (f"feedback {feedback['id']!r} names version {f['version']!r} but prediction "
                f"{prediction['id']!r} is version {p.get('version')!r}")
    return None


def labeled_event(prediction: dict[str, Any], feedback: dict[str, Any],
                  *, correction: bool = False) -> events.Event:
    """The labeled record: prediction output, feedback truth/reward and per-record quality.

    Its id derives from the feedback's (source, id); its model is the prediction's data model.
    """
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
        "correction": correction,
        "metric": None,
        "quality": None,
    }
    if truth is not None and model in catalogue.FAMILIES:
        data["metric"] = catalogue.FAMILIES[model].metric
        cells = len(json.dumps(out)) * len(json.dumps(truth))
        if cells > MAX_SCORE_CELLS:  # edit distances are quadratic: never stall the stream
            data["quality_error"] = f"too large to score ({cells} cells > {MAX_SCORE_CELLS})"
            return _labeled(prediction, feedback, model, data)
        try:
            data["quality"] = quality.score(model, out, truth)
        except (ValueError, TypeError, KeyError, IndexError) as e:
            data["quality_error"] = str(e)
    return _labeled(prediction, feedback, model, data)


def _labeled(prediction: dict[str, Any], feedback: dict[str, Any], model: str,
             data: dict[str, Any]) -> events.Event:
    time = events.parse_time(feedback["time"]) if feedback.get("time") else None
    return events.Event(
        id=labeled.labeled_id(feedback["source"], feedback["id"]), source=SOURCE,
        type=LABELED, data=events.LabeledData.parse(data).to_data(), time=time,
        datacontenttype=events.JSON,
        extensions={"model": model},
    )


def empty_state() -> dict[str, Any]:
    return {"prediction": None, "pending": {}, "seen": [], "label": None, "deadline": None,
            "phase": "window"}


def restore_state(obj: dict[str, Any]) -> dict[str, Any]:
    """State as stored, brought to the current layout (checkpoints of older versions held
    ``matched`` and bare pending records)."""
    state = {**empty_state(), **obj}
    if "matched" in state:
        state["seen"] = list(state.pop("matched")) + state["seen"]
        if state["seen"] and state["label"] is None:
            state["label"] = ["", "", ""]  # labeled before: later feedback is a correction
    state["pending"] = {k: w if "event" in w else {"event": w, "origin": None}
                        for k, w in state["pending"].items()}
    return state


def _match(state: dict[str, Any], fb: dict[str, Any], origin: dict[str, Any] | None
           ) -> list[Output]:
    state["seen"].append(_feedback_key(fb))
    why = mismatch(state["prediction"], fb)
    if why is not None:
        return [Output("deadletter", raw=json.dumps(fb), reason=f"{MODEL_MISMATCH}: {why}",
                       origin=origin, counter="mismatched_feedback")]
    order = _order(fb)
    if state["label"] is not None and order <= state["label"]:
        return [Output("count", counter="superseded_feedback")]
    correction = state["label"] is not None
    state["label"] = order
    return [Output("labeled", labeled_event(state["prediction"], fb, correction=correction),
                   raw=json.dumps(fb), origin=origin)]


def on_record(
    state: dict[str, Any], side: str, record: dict[str, Any], now_ms: int, cfg: JoinConfig,
    origin: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[Output], int | None]:
    """Feed one record of key's stream; returns new state, outputs, and a timer to set."""
    outputs: list[Output] = []
    timer = None
    if state["deadline"] is None:
        state["deadline"] = now_ms + cfg.window_ms
        timer = state["deadline"]
    if side == PREDICTION:
        if state["prediction"] is not None:
            return state, [Output("count", counter="duplicate_predictions")], timer
        state["prediction"] = record
        # Newest first: older waiting feedback is then superseded, not a second label.
        waiting = sorted(state["pending"].values(), key=lambda w: _order(w["event"]),
                         reverse=True)
        state["pending"] = {}
        for w in waiting:
            outputs += _match(state, w["event"], w.get("origin"))
        return state, outputs, timer
    key = _feedback_key(record)
    if key in state["pending"] or key in state["seen"]:
        return state, [Output("count", counter="duplicate_feedback")], timer
    if state["prediction"] is None:
        state["pending"][key] = {"event": record, "origin": origin}
        return state, outputs, timer
    return state, _match(state, record, origin), timer


def on_timer(
    state: dict[str, Any], now_ms: int, cfg: JoinConfig
) -> tuple[dict[str, Any] | None, list[Output], int | None]:
    """The phase closed: dead-letter waiting feedback, count an unanswered prediction, keep
    a labeled prediction for corrections (new state and timer) or drop the key (None)."""
    if state.get("phase") == "corrections":
        return None, [], None
    outputs = [
        Output("deadletter", raw=json.dumps(w["event"]), origin=w.get("origin"), reason=(
            f"{UNMATCHED_FEEDBACK}: no prediction "
            f"{w['event']['data'].get('prediction_id')!r} within {cfg.window_ms / 1000:g} s"))
        for _, w in sorted(state["pending"].items())
    ]
    if state["prediction"] is not None and state["label"] is None:
        outputs.append(Output("count", counter="unmatched_predictions"))
    if state["prediction"] is not None and state["label"] is not None and cfg.keep_ms > 0:
        deadline = now_ms + cfg.keep_ms
        kept = {"prediction": state["prediction"], "pending": {}, "seen": state["seen"],
                "label": state["label"], "deadline": deadline, "phase": "corrections"}
        return kept, outputs, deadline
    return None, outputs, None


def _dead_letter_of(raw: str | None, reason: str, origin: dict[str, Any] | None,
                    cfg: JoinConfig) -> Record:
    """A dead letter for a structured record (feedback) held by the join."""
    where = Origin.from_json(origin, topics.FEEDBACK)
    try:
        fb = json.loads(raw or "{}")
        data = fb.get("data") if isinstance(fb.get("data"), dict) else {}
        rec = events.to_kafka(events.from_structured(fb), key=data.get("model"))
        return dead_letter(rec.value, rec.headers, reason=reason, origin=where, key=rec.key,
                           max_value_bytes=cfg.max_dead_letter_value_bytes)
    except (DriftloopError, ValueError, TypeError) as e:
        return dead_letter((raw or "").encode(), [], reason=f"{reason} ({type(e).__name__})",
                           origin=where, max_value_bytes=cfg.max_dead_letter_value_bytes)


def encode(out: Output, cfg: JoinConfig) -> Record:
    """The sink record of one output. A labeled record that cannot be encoded (NaN) or is
    over the record limit becomes a dead letter of its feedback, with the reason."""
    if out.kind != "labeled" or out.event is None:
        return _dead_letter_of(out.raw, out.reason or UNMATCHED_FEEDBACK, out.origin, cfg)
    try:
        rec = events.to_kafka(out.event, key=out.event.extensions.get("model"))
    except ValueError as e:
        return _dead_letter_of(out.raw, f"{UNENCODABLE}: labeled record: {e}", out.origin,
                               cfg)
    size = record_size(rec.key, rec.value, rec.headers)
    if size > cfg.max_record_bytes:
        return _dead_letter_of(
            out.raw, f"{TOO_LARGE}: labeled record of {size} bytes is over the "
            f"{cfg.max_record_bytes}-byte record limit", out.origin, cfg)
    return Record(topics.LABELED, rec.key, rec.value, list(rec.headers))
