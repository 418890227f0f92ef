"""feedback-intake end to end: real functions-framework server, real Kafka, archive v0
into a folder and into a real S3-compatible server."""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from driftloop import topics
from driftloop.archive import Archiver
from driftloop.blob import BlobStore, open_store
from driftloop.bus import make_producer, publish
from tests.fixtures.intake import (
    feedback,
    post_batch,
    post_binary,
    post_structured,
    unique_source,
)

pytestmark = pytest.mark.integration


def archived(store: BlobStore, kind: str = "feedback") -> list[dict]:
    out = []
    for key in store.list(f"{kind}/"):
        out.extend(json.loads(line) for line in store.get(key).splitlines() if line.strip())
    return out


def run_archive_until(settings, store, predicate, timeout_s=60.0) -> Archiver:
    """Run archive v0 in a thread (its own consumer group) until ``predicate(store, archiver)``.
    """
    archiver = Archiver(settings, store, group_id=f"archive-{uuid.uuid4().hex[:8]}",
                        topic_names=[topics.FEEDBACK])
    thread = threading.Thread(target=archiver.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    try:
        while not predicate(store, archiver):
            assert time.monotonic() < deadline, "archive did not catch up in time"
            time.sleep(0.5)
        time.sleep(settings.archive_flush_s + 0.5)  # one more batch: nothing extra may appear
    finally:
        archiver.stop()
        thread.join(timeout=30)
    return archiver


@pytest.fixture(scope="module")
def thousand(intake_server):
    """1,000 feedback events over HTTP: 300 binary, 300 structured, 400 in batches of 50."""
    src = unique_source()
    events = [feedback(src, i, model=("digits" if i % 2 else "ocr")) for i in range(1000)]
    with httpx.Client(base_url=intake_server.url, timeout=30) as client:
        def send_one(args):
            mode, evs = args
            if mode == "binary":
                return [post_binary(client, "/", evs[0]).status_code]
            if mode == "structured":
                return [post_structured(client, "/", evs[0]).status_code]
            r = post_batch(client, "/", evs)
            return [x["status"] for x in r.json()["results"]]

        jobs = [("binary", [e]) for e in events[:300]]
        jobs += [("structured", [e]) for e in events[300:600]]
        jobs += [("batch", events[i:i + 50]) for i in range(600, 1000, 50)]
        with ThreadPoolExecutor(8) as pool:
            statuses = [s for batch in pool.map(send_one, jobs) for s in batch]
    assert statuses == [202] * 1000
    return src, events


def test_thousand_events_land_once_in_kafka(thousand, kafka):
    src, events = thousand
    ids = [e.id for e in kafka.read_events(topics.FEEDBACK) if e.source == src]
    assert len(ids) == 1000
    assert set(ids) == {e.id for e in events}


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_thousand_events_archived_once(thousand, settings_factory, s3, tmp_path, backend):
    src, events = thousand
    settings = settings_factory(archive_flush_s=1.0)
    url = tmp_path.as_uri() if backend == "file" else f"s3://{s3.new_bucket()}/lake"
    store = open_store(url, settings)

    def mine(st):
        return [r for r in archived(st) if r["source"] == src]

    run_archive_until(settings, store, lambda st, a: len(mine(st)) >= 1000)
    records = mine(store)
    assert len(records) == 1000
    assert {r["id"] for r in records} == {e.id for e in events}
    keys = list(store.list("feedback/"))
    assert {k.split("/")[1] for k in keys} >= {"model=digits", "model=ocr"}
    assert all(k.split("/")[2].startswith("date=") and k.endswith(".jsonl") for k in keys)
    by_model = {r["id"]: r["data"]["model"] for r in records}
    for key in keys:
        model = key.split("/")[1].removeprefix("model=")
        for line in store.get(key).splitlines():
            obj = json.loads(line)
            if obj["source"] == src:
                assert by_model[obj["id"]] == model


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_duplicate_id_yields_one_record_downstream(
    intake_server, kafka, settings_factory, s3, tmp_path, backend
):
    src = unique_source()
    e = feedback(src, 1)
    with httpx.Client(base_url=intake_server.url) as client:
        assert post_binary(client, "/", e).status_code == 202
        assert post_structured(client, "/", e).json()["duplicate"] is True  # a client retry
        assert post_batch(client, "/", [e, feedback(src, 2)]).status_code == 202
    assert [x.id for x in kafka.read_events(topics.FEEDBACK) if x.source == src].count(e.id) == 1
    settings = settings_factory(archive_flush_s=1.0)
    # Copies intake's replay window cannot stop (a "possibly persisted" write that lands
    # after its retry, a window that expired): written past intake, as such a write would be.
    producer = make_producer(settings)
    try:
        publish(producer, topics.FEEDBACK, [e, e], key=e.data["model"])
    finally:
        producer.close()
    url = tmp_path.as_uri() if backend == "file" else f"s3://{s3.new_bucket()}/lake"
    store = open_store(url, settings)

    def mine(st):
        return sorted(r["id"] for r in archived(st) if r["source"] == src)

    first = run_archive_until(settings, store, lambda st, a: len(mine(st)) >= 2)
    assert mine(store) == [e.id, f"{src}-2"]
    assert first.duplicates >= 2

    # A fresh archive (new consumer group: it re-reads the whole topic) over the same
    # store writes none of these again: the store is the memory of what was archived.
    second = run_archive_until(settings, store, lambda st, a: a.duplicates >= first.written + 2)
    assert mine(store) == [e.id, f"{src}-2"]
    assert second.written == 0


def test_poison_records_go_to_dead_letter(kafka, settings_factory, tmp_path):
    from kafka import KafkaProducer

    from driftloop.events import to_kafka

    src = unique_source()
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    producer.send(topics.FEEDBACK, value=b"not a cloudevent", headers=[("probe", src.encode())])
    bad = feedback(src, 1)
    bad = type(bad)(**{**bad.__dict__, "data": {**bad.data, "model": "../etc"}})
    rec = to_kafka(bad)
    producer.send(topics.FEEDBACK, key=rec.key, value=rec.value, headers=rec.headers)
    good = feedback(src, 2)
    rec = to_kafka(good, key="digits")
    producer.send(topics.FEEDBACK, key=rec.key, value=rec.value, headers=rec.headers)
    producer.flush()
    producer.close()

    settings = settings_factory(archive_flush_s=1.0)
    store = open_store(tmp_path.as_uri(), settings)
    run_archive_until(settings, store,
                      lambda st, a: any(r["id"] == good.id for r in archived(st)))
    assert [r["id"] for r in archived(store) if r["source"] == src] == [good.id]

    dead = kafka.read_records(topics.DEADLETTER)
    mine = [r for r in dead
            if src.encode() in (dict(r.headers).get("probe"), dict(r.headers).get("ce_source"))]
    # Other consumers of driftloop.feedback (the Flink join) dead-letter these too, with
    # their own reason prefix; count the archive's.
    reasons = sorted(dict(r.headers)["dl_reason"].decode() for r in mine
                     if dict(r.headers)["dl_reason"].startswith(b"archive:"))
    assert len(reasons) == 2, reasons
    assert any("no valid model" in x for x in reasons)
    assert any("not a CloudEvent" in x for x in reasons)
    assert all(dict(r.headers)["dl_source_topic"] == topics.FEEDBACK.encode() for r in mine)
    assert all(dict(r.headers).get("ce_source") in (None, src.encode()) for r in mine)
