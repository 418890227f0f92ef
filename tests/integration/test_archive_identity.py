"""Archive v0 and the training-data reader against real Kafka and a real S3 server: ids
reused across sources lose nothing, the same (source, id) twice is one record, corrections
leave one label per prediction, and the data's model names the partition."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from driftloop import bus, events, topics
from driftloop.archive import Archiver
from driftloop.blob import BlobStore, open_store
from driftloop.labeled import labeled_id
from driftloop.retrain.data import read_labeled

pytestmark = pytest.mark.integration


def lines(store: BlobStore, prefix: str) -> list[dict]:
    out = []
    for key in store.list(prefix):
        out.extend(json.loads(x) for x in store.get(key).splitlines() if x.strip())
    return out


def fb(source: str, id_: str, pid: str, model: str, truth: object, t: str,
       ext_model: str | None = None) -> events.Event:
    from datetime import datetime

    return events.new_event(events.FEEDBACK, source, {"prediction_id": pid, "model": model,
                                                      "truth": truth},
                            id=id_, time=datetime.fromisoformat(t),
                            **({"model": ext_model} if ext_model else {}))


def lab(feedback: events.Event, output: dict, *, legacy: bool = False) -> events.Event:
    """A labeled record as the join writes it (``legacy``: the old id = feedback id)."""
    d = feedback.data
    data = {"prediction_id": d["prediction_id"], "feedback_id": feedback.id,
            "feedback_source": feedback.source, "model": d["model"], "version": "1",
            "output": output, "truth": d["truth"], "metric": "accuracy",
            "quality": float(str(output.get("label")) == str(d["truth"])),
            "feedback_time": feedback.time.isoformat() if feedback.time else None}
    id_ = feedback.id if legacy else labeled_id(feedback.source, feedback.id)
    return events.Event(id=id_, source="driftloop/flink/join", type=events.LABELED, data=data,
                        time=feedback.time, datacontenttype=events.JSON,
                        extensions={"model": d["model"]})


def test_archive_v0_and_reader_keep_colliding_ids_and_drop_true_repeats(
    kafka, settings_factory, s3
) -> None:
    run = uuid.uuid4().hex[:8]
    model = f"digits{run}"
    a1 = fb(f"app-a-{run}", "fb-1", f"P1-{run}", model, "3", "2026-01-01T00:00:01+00:00")
    b1 = fb(f"app-b-{run}", "fb-1", f"P2-{run}", model, "4", "2026-01-01T00:00:02+00:00")
    corr = fb(f"app-a-{run}", "fb-2", f"P1-{run}", model, "5", "2026-01-01T00:00:09+00:00")
    # data says this model, the extension another: the data's model wins
    contra = fb(f"app-c-{run}", "fb-9", f"P9-{run}", model, "1", "2026-01-01T00:00:03+00:00",
                ext_model="faces")
    labeled = [lab(a1, {"label": "3"}), lab(b1, {"label": "4"}), lab(corr, {"label": "3"})]
    legacy = [lab(a1, {"label": "3"}, legacy=True), lab(b1, {"label": "4"}, legacy=True)]
    p = bus.make_producer(settings_factory())
    bus.publish(p, topics.FEEDBACK, [a1, b1, a1, corr, contra])  # a1 twice: one record
    bus.publish(p, topics.LABELED, [*labeled, labeled[0], *legacy])
    p.close()

    settings = settings_factory(archive_flush_s=1.0)
    store = open_store(f"s3://{s3.new_bucket()}/lake", settings)
    archiver = Archiver(settings, store, group_id=f"archive-{run}",
                        topic_names=[topics.FEEDBACK, topics.LABELED])
    thread = threading.Thread(target=archiver.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 90
    try:
        while len(lines(store, f"labeled/model={model}/")) < 3 or len(
                lines(store, f"feedback/model={model}/")) < 4:
            assert time.monotonic() < deadline, "archive v0 did not catch up"
            time.sleep(0.5)
        time.sleep(settings.archive_flush_s + 1.5)  # nothing more may appear
    finally:
        archiver.stop()
        thread.join(timeout=30)

    fbs = lines(store, f"feedback/model={model}/")
    assert sorted((x["source"], x["id"]) for x in fbs) == sorted(
        (e.source, e.id) for e in (a1, b1, corr, contra))
    assert not list(store.list("feedback/model=faces/"))
    labs = lines(store, f"labeled/model={model}/")
    # Three feedback events, three labeled lines: the legacy copies (old ids, same feedback)
    # and the repeat are the same records.
    assert sorted((x["data"]["feedback_source"], x["data"]["feedback_id"]) for x in labs) == \
        sorted((e.source, e.id) for e in (a1, b1, corr))

    # The training-data reader over the same S3 archive, with copies and legacy lines added.
    extra = [events.to_structured(e) for e in (labeled[1], *legacy)]
    store.put(f"labeled/model={model}/date=2026-01-01/copy.jsonl",
              "\n".join(json.dumps(x) for x in extra).encode())
    recs = read_labeled(store, model)
    by_pred = {r.data["prediction_id"]: r.data for r in recs}
    assert len(recs) == 2 == len(by_pred)  # one label per prediction, none lost
    assert by_pred[f"P1-{run}"]["truth"] == "5"  # the correction (latest event time) wins
    assert by_pred[f"P2-{run}"]["feedback_source"] == f"app-b-{run}"
