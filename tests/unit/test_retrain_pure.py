"""Labeled data handling and the Kubernetes Job manifest of a training run."""

from __future__ import annotations

import json
from pathlib import Path

from driftloop.blob import open_store
from driftloop.retrain.backends import TrainingRequest, render_job
from driftloop.retrain.data import read_labeled, split_by_time, to_record
from driftloop.settings import Settings


def line(i: int, *, fid: str | None = None, truth: object = 3) -> str:
    return json.dumps({"specversion": "1.0", "id": f"l{i}", "source": "join",
                       "type": "io.driftloop.labeled.v1",
                       "data": {"model": "digits", "prediction_id": f"p{i}",
                                "feedback_id": fid or f"f{i}", "feedback_source": "app",
                                "truth": truth, "feedback_time": f"2026-11-28T10:00:{i:02d}Z"}})


def test_labeled_records_are_deduplicated_ordered_and_bounded(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path)
    store = open_store(s.resolved_blob_url, s)
    store.put("labeled/model=digits/date=2026-11-28/b.jsonl",
              "\n".join([line(5), line(1), "not json", line(3, truth=None)]).encode())
    store.put("labeled/model=digits/date=2026-11-28/a.jsonl",
              "\n".join([line(1), line(2), line(9)]).encode())
    store.put("labeled/model=digits/date=2026-11-28/.part-0-1.inprogress",
              line(7).encode())  # an uncommitted part file: not read
    recs = read_labeled(store, "digits")
    assert [r.data["prediction_id"] for r in recs] == ["p1", "p2", "p5", "p9"]
    bounded = read_labeled(store, "digits", until="2026-11-28T10:00:05Z")
    assert [r.data["prediction_id"] for r in bounded] == ["p1", "p2", "p5"]
    assert read_labeled(store, "ocr") == []


def test_split_by_time_keeps_the_newest_for_evaluation() -> None:
    recs = [r for i in range(20) if (r := to_record(json.loads(line(i)))) is not None]
    older, recent = split_by_time(recs, 0.3)
    assert len(older) == 14 and len(recent) == 6
    assert max(r.time for r in older) < min(r.time for r in recent)
    few_old, few_recent = split_by_time(recs[:5], 0.3)
    assert len(few_old) == 5 and few_recent == []


def test_kubernetes_job_manifest(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path, k8s_namespace="ml", k8s_training_image="reg/dl:1.2")
    doc = render_job(s, TrainingRequest("digits", "20261128t120000000000-abc123", {"C": 5}))
    assert doc["apiVersion"] == "batch/v1" and doc["kind"] == "Job"
    assert doc["metadata"]["namespace"] == "ml"
    assert len(doc["metadata"]["name"]) <= 63
    assert doc["metadata"]["labels"]["driftloop.io/run-id"] == "20261128t120000000000-abc123"
    pod = doc["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and doc["spec"]["backoffLimit"] == 0
    c = pod["containers"][0]
    assert c["image"] == "reg/dl:1.2"
    assert c["command"] == ["python"]
    assert c["args"][:6] == ["-m", "driftloop.retrain.job", "--model", "digits", "--run-id",
                             "20261128t120000000000-abc123"]
    assert json.loads(c["args"][-1]) == {"C": 5}
    # Settings and secrets come from the cluster, never from the rendered manifest.
    assert c["envFrom"] == [{"configMapRef": {"name": "driftloop-settings"}},
                            {"secretRef": {"name": "driftloop-s3"}}]
    assert "env" not in c


def test_kubernetes_job_manifest_matches_the_upstream_schema(tmp_path: Path) -> None:
    """Against batch/v1 Job from the schema index make setup builds (the cluster's own)."""
    from driftloop.manifests import DEFAULT_CACHE, Schemas, validate_documents

    schemas = Schemas(DEFAULT_CACHE / "schemas" / "index")
    doc = render_job(Settings(state_dir=tmp_path), TrainingRequest("digits", "r-1", {}))
    report = validate_documents([doc], schemas)
    assert report.ok, report.errors
    assert report.kinds == {"batch/v1/Job": 1}
    doc["spec"]["template"]["spec"]["containers"][0]["args"] = "--model digits"
    assert [e.field for e in validate_documents([doc], schemas).errors] == [
        "spec.template.spec.containers[0].args"]
