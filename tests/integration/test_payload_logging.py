"""Every answer's input is kept, so all feedback trains the next version.

Real parts only: MLServer (REST and gRPC) and the stream predictor write their answered
inputs to the S3 server and put ``input_ref`` in the prediction events; feedback goes
through feedback-intake; the Flink application joins and archives labeled records; the
training run reads them back. And a blob store that is down never fails an inference: the
lost logs are counted on the model server's /metrics.
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from driftloop import bus, events, topics
from driftloop.blob import BlobStore, open_store
from driftloop.events import PREPROCESSED
from driftloop.local.process import free_port
from driftloop.local.s3 import S3Server
from driftloop.policy import load_policy
from driftloop.registry import Registry
from driftloop.retrain.data import read_labeled
from driftloop.retrain.pipeline import train_model, training_rows
from driftloop.retrain.trainers import trainer_for
from driftloop.serving import v2
from driftloop.serving.bootstrap import ensure_models
from driftloop.serving.client import V2Client
from driftloop.serving.server import VENV, MLServerProcess
from driftloop.serving.stream import StreamPredictor
from driftloop.settings import Settings
from tests.fixtures.flink import FlinkApp, wait_for
from tests.fixtures.intake import intake_client
from tests.fixtures.kafka import KafkaFixture
from tests.fixtures.s3 import S3Fixture
from tests.fixtures.serving import digit_png

pytestmark = pytest.mark.integration

GRPC_CLIENT = """
import json, sys
import grpc
from mlserver.grpc import dataplane_pb2_grpc
from mlserver.grpc.converters import ModelInferRequestConverter
from mlserver.types import InferenceRequest

stub = dataplane_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(sys.argv[1]))
out = []
for body in json.loads(sys.stdin.read()):
    req = ModelInferRequestConverter.from_types(InferenceRequest.model_validate(body),
                                                model_name="digits")
    out.append({"id": stub.ModelInfer(req, timeout=60).id})
print(json.dumps(out))
"""


def write_policy(folder: Path, **inputs: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "digits.yaml").write_text(
        yaml.safe_dump(
            {
                "model": "digits",
                "training": {"recent_share": 0.3, "min_feedback_rows": 1},
                "inputs": {"mode": "all", **inputs},
            }
        )
    )
    return folder


def serving_settings(
    tmp: Path, kafka_bootstrap: str, blob_url: str, s3: S3Fixture | Any, policy_dir: Path
) -> Settings:
    return Settings(
        state_dir=tmp,
        kafka_bootstrap=kafka_bootstrap,
        blob_url=blob_url,
        s3_endpoint_url=s3.endpoint_url,
        s3_access_key_id=s3.access_key,
        s3_secret_access_key=s3.secret_key,
        serving_models="digits",
        serving_http_port=free_port(),
        serving_grpc_port=free_port(),
        serving_metrics_port=free_port(),
        policy_dir=policy_dir,
    )


@dataclass
class Loop:
    settings: Settings
    server: MLServerProcess
    store: BlobStore


@pytest.fixture(scope="module")
def loop(
    flink_kafka: KafkaFixture,
    flink_app: FlinkApp,
    s3: S3Fixture,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Loop]:
    """MLServer serving digits into the Flink application's broker and lake bucket."""
    tmp = tmp_path_factory.mktemp("payload-loop")
    settings = serving_settings(
        tmp,
        flink_kafka.bootstrap,
        str(flink_app.settings.blob_url),
        s3,
        write_policy(tmp / "policies"),
    )
    store = open_store(settings.resolved_blob_url, settings)
    ensure_models(Registry(store), ["digits"])
    server = MLServerProcess(settings, tmp / "server", tmp / "mlserver.log").start(180)
    yield Loop(settings, server, store)
    server.stop()


def test_rest_grpc_and_stream_feedback_all_trains(loop: Loop) -> None:
    from driftloop.serving.models import digits

    ds = digits.load_dataset()
    s = loop.settings
    truth: dict[str, int] = {}
    tag = uuid.uuid4().hex[:8]
    # REST: PNG files and tensors
    with V2Client(loop.server.url, timeout_s=60) as client:
        for i in range(6):
            pid = f"rest-{tag}-{i}"
            if i % 2:
                pred = client.infer_tensor("digits", [ds.X[i].tolist()], request_id=pid)
            else:
                pred = client.infer_bytes("digits", digit_png(ds.X[i]), request_id=pid)
            assert pred.id == pid
            truth[pid] = int(ds.y[i])
    # gRPC: tensors
    bodies = [
        v2.tensor_request([ds.X[10 + i].tolist()], request_id=f"grpc-{tag}-{i}") for i in range(4)
    ]
    r = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", GRPC_CLIENT, f"127.0.0.1:{s.serving_grpc_port}"],
        input=json.dumps(bodies),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert [o["id"] for o in json.loads(r.stdout)] == [b["id"] for b in bodies]
    truth.update({b["id"]: int(ds.y[10 + i]) for i, b in enumerate(bodies)})
    # the stream: preprocessed records with the media inline (nothing stored by Flink)
    topic = f"{topics.preprocessed('image')}"
    producer = bus.make_producer(s)
    stream_ids = []
    for i in range(4):
        png = digit_png(ds.X[20 + i])
        e = events.new_event(
            PREPROCESSED,
            "test/flink",
            {
                "model": "digits",
                "modality": "image",
                "payload": {
                    "content_type": "image/png",
                    "encoding": "base64",
                    "bytes": len(png),
                    "data": base64.b64encode(png).decode(),
                },
            },
            id=f"stream-{tag}-{i}",
            model="digits",
            modality="image",
        )
        bus.send_event(producer, topic, e, key="digits")
        stream_ids.append(e.id)
        truth[e.id] = int(ds.y[20 + i])
    producer.flush()
    producer.close()
    predictor = StreamPredictor(
        s.model_copy(update={"serving_stream_group": f"t-{tag}", "serving_url": loop.server.url}),
        topic_names=[topic],
    )
    thread = threading.Thread(target=predictor.run, daemon=True)
    thread.start()

    def predictions() -> dict[str, events.Event]:
        got = {}
        for rec in bus_records(s, topics.PREDICTIONS):
            if rec.id in truth:
                got[rec.id] = rec
        return got if set(got) == set(truth) else {}

    try:
        preds = wait_for(predictions, timeout_s=120, what="a prediction event per request")
    finally:
        predictor.stop_event.set()
        thread.join(timeout=30)
    # every prediction event names its kept input, and the input is there
    for pid, e in preds.items():
        ref = e.data.get("input_ref")
        assert isinstance(ref, str) and ref.startswith("inputs/model=digits/date="), (pid, ref)
    wait_for(
        lambda: all(loop.store.exists(e.data["input_ref"]) for e in preds.values()),
        timeout_s=30,
        what="the kept inputs in the blob store",
    )
    assert {preds[i].data["input_ref"].rsplit(".", 1)[1] for i in stream_ids} == {"png"}

    # feedback through feedback-intake, on the Flink application's broker
    client, service = intake_client(s.model_copy(update={"intake_send_timeout_s": 10}))
    try:
        batch = [
            events.new_event(
                events.FEEDBACK,
                f"app-{tag}",
                {"prediction_id": pid, "model": "digits", "truth": label},
                id=f"fb-{pid}",
            )
            for pid, label in truth.items()
        ]
        resp = client.post(
            "/",
            headers={"content-type": events.BATCH},
            content=json.dumps([events.to_structured(e) for e in batch]),
        )
        assert resp.status_code == 202, resp.text
    finally:
        service.close()

    def mine() -> list[Any]:
        recs = [
            r for r in read_labeled(loop.store, "digits") if r.data.get("prediction_id") in truth
        ]
        return recs if len(recs) == len(truth) else []

    labeled = wait_for(mine, timeout_s=180, what="a labeled record per prediction")
    assert {r.data["input_ref"] for r in labeled} == {e.data["input_ref"] for e in preds.values()}
    # the training-data reader resolves every one of them
    skipped: Any = {}
    from collections import Counter

    skipped = Counter()
    rows = training_rows(trainer_for("digits"), labeled, loop.store, skipped)
    assert len(rows) == len(truth) == 14 and not skipped
    # and a training run uses all of them (the lake may hold other tests' records too)
    policy = load_policy(s.policy_dir, "digits")
    result = train_model(s, policy, run_id=f"run-{tag}", store=loop.store, emit=False)
    m = result.metrics
    usable = m["n_feedback_train"] + m["n_recent"]
    assert usable >= len(truth)
    assert usable == len(read_labeled(loop.store, "digits")) - m["n_skipped"]
    assert "input_missing" not in result.lineage["feedback_skipped"]


def bus_records(settings: Settings, topic: str) -> list[events.Event]:
    from tests.fixtures.flink import read_events

    return [e for e, _ in read_events(settings.kafka_bootstrap, topic)]


def metric(url: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url, timeout=10).text
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            if smp.name == name and all(smp.labels.get(k) == v for k, v in labels.items()):
                total += smp.value
    return total


def test_a_blob_store_that_is_down_never_fails_an_inference(
    kafka: KafkaFixture, tmp_path: Path
) -> None:
    """Its own S3 server, stopped once the model is loaded: inferences answer 200, the
    prediction events still go out (without input_ref) and the lost logs are counted."""
    from driftloop.serving.models import digits

    s3 = S3Fixture(
        S3Server(
            binary=Settings().cache_dir / "bin" / "versitygw",
            root_dir=tmp_path / "s3" / "root",
            port=free_port(),
        )
    )
    s3.start()
    try:
        settings = serving_settings(
            tmp_path,
            kafka.bootstrap,
            f"s3://{s3.new_bucket()}/driftloop",
            s3,
            write_policy(tmp_path / "policies"),
        )
        store = open_store(settings.resolved_blob_url, settings)
        ensure_models(Registry(store), ["digits"])
        server = MLServerProcess(settings, tmp_path / "server", tmp_path / "mlserver.log")
        server.start(180)
    except BaseException:
        s3.stop()
        raise
    ds = digits.load_dataset()
    try:
        with V2Client(server.url, timeout_s=60) as client:
            up = client.infer_tensor("digits", [ds.X[0].tolist()], request_id="up-0")
            assert up.output["label"] == int(ds.y[0])
            wait_for(
                lambda: (
                    metric(server.metrics_url, "driftloop_input_logs_written_total", model="digits")
                    >= 1
                ),
                timeout_s=30,
                what="a kept input",
            )
            s3.stop()
            ids = [f"down-{uuid.uuid4().hex[:6]}-{i}" for i in range(30)]
            for i, pid in enumerate(ids):
                pred = client.infer_tensor("digits", [ds.X[i].tolist()], request_id=pid)
                assert pred.id == pid and pred.output["label"] == int(ds.y[i])
            wait_for(
                lambda: (
                    metric(
                        server.metrics_url,
                        "driftloop_input_logs_dropped_total",
                        model="digits",
                        reason="store_error",
                    )
                    >= 1
                ),
                timeout_s=60,
                what="dropped logs counted",
            )
            assert (
                metric(
                    server.metrics_url,
                    "driftloop_model_requests_total",
                    model="digits",
                    outcome="ok",
                )
                >= 31
            )
    finally:
        server.stop()
        s3.stop()
