"""In-process costs the tests used to time: digits training and the prediction emitter's offer.

Tests assert behaviour only; how fast is measured here, as ratios against a baseline run in
the same process on the same data:

- digits training (``driftloop.serving.models.digits.train``, kind svc) against a bare
  scikit-learn ``SVC().fit`` on the same rows;
- ``PredictionEmitter.offer`` while Kafka is unreachable (full queue, drops counted) against
  a bare ``queue.Queue.put_nowait`` on a full queue, and the same with its spool (each
  record appended to a segment file in a temporary folder, none dropped).

    .venv/bin/python bench/local_costs.py [--runs 5] [--offers 20000] [--json]
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from driftloop import events
from driftloop.errors import Unavailable
from driftloop.serving.emitter import PredictionEmitter
from driftloop.serving.models import digits
from driftloop.serving.spool import Spool


def _unreachable() -> None:
    raise Unavailable("Kafka at 127.0.0.1:1 unavailable")


def training(runs: int) -> dict[str, float]:
    from sklearn.svm import SVC

    train, _ = digits.split(digits.load_dataset())
    ours, bare = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        digits.train(train, {"kind": "svc"})
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        SVC().fit(train.X, train.y)
        bare.append(time.perf_counter() - t0)
    o, b = statistics.median(ours), statistics.median(bare)
    return {
        "digits_train_s": round(o, 4),
        "sklearn_svc_fit_s": round(b, 4),
        "ratio": round(o / b, 2),
    }


def _offer_s(evs: list[events.Event], spool: Spool | None) -> float:
    """Seconds per ``offer`` with Kafka unreachable."""
    emitter = PredictionEmitter(_unreachable, maxsize=5, registry=CollectorRegistry(),
                                spool=spool)
    try:
        t0 = time.perf_counter()
        for e in evs:
            emitter.offer(e, key="digits")
        return (time.perf_counter() - t0) / len(evs)
    finally:
        emitter.close(timeout_s=0.5)


def offers(n: int) -> dict[str, float]:
    evs = [events.new_event(events.PREDICTION, "driftloop/serving/digits",
                            {"model": "digits", "version": "1", "output": {"label": i % 10},
                             "latency_ms": 1.5, "modality": "image"}, model="digits")
           for i in range(n)]
    ours = _offer_s(evs, None)
    with tempfile.TemporaryDirectory() as folder:
        spooled = _offer_s(evs, Spool(Path(folder), max_bytes=1 << 40))
    q: queue.Queue[object] = queue.Queue(5)
    t0 = time.perf_counter()
    for e in evs:
        try:
            q.put_nowait(e)
        except queue.Full:
            pass
    bare = (time.perf_counter() - t0) / n
    return {
        "offer_us": round(ours * 1e6, 2),
        "offer_spooled_us": round(spooled * 1e6, 2),
        "queue_put_nowait_us": round(bare * 1e6, 2),
        "ratio": round(ours / bare, 2),
        "spooled_ratio": round(spooled / ours, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--offers", type=int, default=20000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = {"training": training(args.runs), "emitter_offer": offers(args.offers)}
    if args.json:
        print(json.dumps(figures))
        return
    for name, fig in figures.items():
        print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in fig.items()))


if __name__ == "__main__":
    main()
