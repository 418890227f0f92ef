"""An app in the demo's loop: digits over the model server's V2 REST endpoint, their truth
sent as feedback.

``Traffic`` is an app built on ``driftloop.client``: it asks the champion's public
endpoint (the model server applies the canary split by request id, so the app takes part
in every canary) and posts each answer's truth, the digit's label only, to
feedback-intake. The model server keeps each input in the blob store and names it in its
prediction event (``input_ref``); Flink's join makes the labeled records and archives
them; the training run reads the pixels back from the kept inputs. Nothing here writes a
labeled record.

Without feedback-intake (``intake_url=None``, a stack without Flink's join) the app
writes the labeled records itself, the way the join would, with the pixels in the truth
(``labeled_record``): the end-to-end test on the session fixtures uses that.

The loop step, ``bench/loop.py`` and the end-to-end tests drive it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from driftloop import events as ev
from driftloop import quality, topics
from driftloop.blob import BlobStore
from driftloop.catalogue import family
from driftloop.serving.v2 import Prediction
from driftloop.settings import Settings

if TYPE_CHECKING:
    from driftloop.client.sync import Client

__all__ = [
    "JoinCounts",
    "Traffic",
    "TrafficResult",
    "await_joined",
    "digit_samples",
    "labeled_record",
]

MODEL = "digits"
FEEDBACK_BATCH = 20
"""Predictions between two feedback requests (their labels go in one batch), so labels
follow the answers as an app's would, not all at the end."""


def digit_samples(n: int, *, rotate: bool, seed: int) -> list[tuple[list[float], int]]:
    """``n`` digits of scikit-learn's set as (pixels, label); ``rotate``: turned 90°."""
    import numpy as np

    from driftloop.serving.models import digits

    ds = digits.load_dataset()
    idx = np.random.default_rng(seed).choice(len(ds), n, replace=n > len(ds))
    out = []
    for j in idx:
        px = ds.X[j].reshape(8, 8)
        if rotate:
            px = np.rot90(px)
        out.append((px.reshape(-1).tolist(), int(ds.y[j])))
    return out


def labeled_record(prediction: ev.Event, truth: Any, app: str) -> ev.Event:
    """The labeled record Flink's join makes of a prediction and its feedback."""
    fb = ev.new_event(
        ev.FEEDBACK,
        app,
        {"prediction_id": prediction.id, "model": prediction.data["model"], "truth": truth},
        datacontenttype=ev.JSON,
    )
    try:
        from flink.transforms.join import labeled_event
    except ImportError:  # installed without the flink/ folder: the same record by hand
        data = {
            "prediction_id": prediction.id,
            "feedback_id": fb.id,
            "feedback_source": app,
            **{k: prediction.data.get(k) for k in ("model", "version", "output")},
            "truth": truth,
            "feedback_time": ev.format_time(fb.time or datetime.now(UTC)),
            "metric": family(prediction.data["model"]).metric,
            "quality": quality.score(prediction.data["model"], prediction.data["output"], truth),
        }
        return ev.Event(
            id=fb.id,
            source="driftloop/flink/join",
            type="io.driftloop.labeled.v1",
            data=data,
            time=fb.time,
            datacontenttype=ev.JSON,
            extensions={"model": str(prediction.data["model"])},
        )
    return labeled_event(ev.to_structured(prediction), ev.to_structured(fb))


@dataclass
class TrafficResult:
    """What one batch of requests did, as the app saw it."""

    accuracy: float
    by_version: dict[str, tuple[float, int]]
    predictions: list[Prediction]
    feedback_accepted: int = 0

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.predictions]


@dataclass
class JoinCounts:
    """Labeled records the join archived for a set of predictions."""

    expected: int
    labeled: int = 0
    with_input_ref: int = 0
    missing: list[str] = field(default_factory=list)


class Traffic:
    """An app sending digits and their truth; one ``driftloop.client.Client`` (and, without
    feedback-intake, one Kafka producer) for its lifetime."""

    def __init__(
        self,
        settings: Settings,
        serving_url: str,
        *,
        intake_url: str | None,
        store: BlobStore | None = None,
        app: str = "driftloop-demo-app",
    ) -> None:
        from driftloop import client

        self.settings, self.store, self.app = settings, store, app
        self.intake_url = intake_url
        self.client: Client = client.Client(
            source=app,
            serving_url=serving_url,
            intake_url=intake_url,
            token=next(iter(sorted(settings.intake_token_set)), None),
            timeout_s=max(settings.serving_timeout_s, 30.0),
        )
        self.producer: Any = None
        if intake_url is None:
            if store is None:
                raise ValueError("without feedback-intake the app archives labels: a store")
            from driftloop.bus import make_producer

            self.producer = make_producer(settings, linger_ms=5)
        self.predicted = 0
        self.feedback_sent = 0

    def close(self) -> None:
        self.client.close()
        if self.producer is not None:
            self.producer.close(timeout=5)

    def send(
        self, samples: list[tuple[list[float], int]], *, feedback: bool = True
    ) -> TrafficResult:
        """Ask the model about each sample over V2 REST; every ``FEEDBACK_BATCH`` answers,
        send their labels back."""
        preds: list[Prediction] = []
        hits: dict[str, list[float]] = {}
        accepted = 0
        for i in range(0, len(samples), FEEDBACK_BATCH):
            chunk = samples[i : i + FEEDBACK_BATCH]
            answered = []
            for pixels, label in chunk:
                pred = self.client.predict(MODEL, [pixels])
                answered.append(pred)
                score = quality.score(MODEL, dict(pred.output), {"label": label})
                hits.setdefault(str(pred.version), []).append(float(score))
            self.predicted += len(answered)
            preds += answered
            if feedback:
                n = (
                    self._to_intake(answered, [label for _, label in chunk])
                    if self.intake_url is not None
                    else self._as_the_join_would(answered, chunk)
                )
                accepted += n
                self.feedback_sent += n
        allq = [q for qs in hits.values() for q in qs]
        return TrafficResult(
            sum(allq) / max(len(allq), 1),
            {v: (sum(qs) / len(qs), len(qs)) for v, qs in hits.items()},
            preds,
            accepted,
        )

    def _to_intake(self, preds: list[Prediction], labels: list[int]) -> int:
        """The labels to feedback-intake in one batch; the join pairs them with the answers."""
        items = [
            self.client.make_feedback(p, truth=label)
            for p, label in zip(preds, labels, strict=True)
        ]
        result = self.client.feedback_batch(items)
        if result.rejected:
            first = result.rejected[0]
            raise RuntimeError(
                f"feedback-intake refused {len(result.rejected)} of {len(items)}: "
                f"{first.status} {first.to_dict()}"
            )
        return result.accepted

    def _as_the_join_would(
        self, preds: list[Prediction], samples: list[tuple[list[float], int]]
    ) -> int:
        """No join in this stack: labeled records (pixels in the truth) to Kafka and the
        archive, as the join would write them."""
        from driftloop.bus import publish

        assert self.store is not None
        records = []
        for pred, (pixels, label) in zip(preds, samples, strict=True):
            prediction = ev.new_event(
                ev.PREDICTION,
                f"driftloop/serving/{MODEL}",
                {"model": MODEL, "version": pred.version, "output": dict(pred.output)},
                id=pred.id,
                datacontenttype=ev.JSON,
            )
            records.append(labeled_record(prediction, {"label": label, "pixels": pixels}, self.app))
        publish(self.producer, topics.LABELED, records, key=MODEL)
        day = datetime.now(UTC).date().isoformat()
        key = f"labeled/model={MODEL}/date={day}/{self.app}-{uuid.uuid4().hex}.jsonl"
        self.store.put(key, "\n".join(json.dumps(ev.to_structured(e)) for e in records).encode())
        return len(records)


def await_joined(
    store: BlobStore, prediction_ids: Collection[str], *, timeout_s: float = 180.0
) -> JoinCounts:
    """Wait until the archive holds a labeled record for each prediction (what a training
    run reads); count those whose input the model server kept (``input_ref``)."""
    from driftloop.retrain.data import read_labeled

    wanted = set(prediction_ids)
    counts = JoinCounts(expected=len(wanted))
    deadline = time.monotonic() + timeout_s
    while True:
        found = {
            str(r.data.get("prediction_id")): r.data
            for r in read_labeled(store, MODEL)
            if r.data.get("prediction_id") in wanted
        }
        counts.labeled = len(found)
        counts.with_input_ref = sum(1 for d in found.values() if d.get("input_ref"))
        if counts.labeled >= len(wanted) or time.monotonic() > deadline:
            counts.missing = sorted(wanted - set(found))[:5]
            return counts
        time.sleep(1.0)
