"""An app in the demo's loop: digits through the canary router, their truth fed back.

``Traffic`` sends digits through the canary router (or the champion's endpoint) and feeds
back their truth the way Flink's join would (labeled records to Kafka and the blob store
archive). The loop step, ``bench/loop.py`` and the end-to-end tests drive it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from driftloop import events as ev
from driftloop import quality, topics
from driftloop.blob import BlobStore
from driftloop.catalogue import family
from driftloop.settings import Settings

if TYPE_CHECKING:
    from driftloop.promotion.routing import Router

__all__ = ["Traffic", "TrafficResult", "digit_samples", "labeled_record"]


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
    accuracy: float
    by_version: dict[str, tuple[float, int]]
    records: list[ev.Event]


class Traffic:
    """An app sending digits and their truth; one Kafka producer for its lifetime."""

    def __init__(
        self,
        settings: Settings,
        store: BlobStore,
        serving_url: str,
        app: str = "driftloop-demo-app",
    ) -> None:
        from driftloop.bus import make_producer
        from driftloop.promotion.routing import Router
        from driftloop.serving.client import V2Client

        self.settings, self.store, self.app = settings, store, app
        self.router: Router = Router(store, serving_url)
        self.plain = V2Client(serving_url)
        self.producer = make_producer(settings, linger_ms=5)

    def close(self) -> None:
        self.router.close()
        self.plain.close()
        self.producer.close(timeout=5)

    def send(
        self, samples: list[tuple[list[float], int]], *, routed: bool = True, archive: bool = True
    ) -> TrafficResult:
        """Infer each sample (canary split when ``routed``), then feed back the truth."""
        from driftloop.bus import publish

        records: list[ev.Event] = []
        hits: dict[str, list[float]] = {}
        for pixels, label in samples:
            rid = str(uuid.uuid4())
            if routed:
                pred = self.router.infer_tensor("digits", [pixels], request_id=rid)
            else:
                pred = self.plain.infer_tensor("digits", [pixels], request_id=rid)
            prediction = ev.new_event(
                ev.PREDICTION,
                "driftloop/serving/digits",
                {"model": "digits", "version": pred.version, "output": dict(pred.output)},
                id=pred.id,
                datacontenttype=ev.JSON,
            )
            rec = labeled_record(prediction, {"label": label, "pixels": pixels}, self.app)
            records.append(rec)
            hits.setdefault(str(pred.version), []).append(float(rec.data["quality"]))
        publish(self.producer, topics.LABELED, records, key="digits")
        if archive:
            day = datetime.now(UTC).date().isoformat()
            key = f"labeled/model=digits/date={day}/{self.app}-{uuid.uuid4().hex}.jsonl"
            self.store.put(
                key, "\n".join(json.dumps(ev.to_structured(e)) for e in records).encode()
            )
        allq = [q for qs in hits.values() for q in qs]
        return TrafficResult(
            sum(allq) / max(len(allq), 1),
            {v: (sum(qs) / len(qs), len(qs)) for v, qs in hits.items()},
            records,
        )
