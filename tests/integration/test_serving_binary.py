"""The binary paths into the model server, end to end on real MLServer, Kafka and S3.

Media cross without base64 or JSON: REST with the file as the body
(``seldon.runtimes.binary``), gRPC with the file in ``raw_input_contents``. Each family
answers them as it answers the JSON path; the prediction id comes back on every path and
names the prediction event (with its kept input); broken media are 4xx naming the field.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from driftloop import topics
from driftloop.blob import open_store
from driftloop.client import AsyncClient, Client
from driftloop.errors import BadRequest, UnsupportedMediaType
from driftloop.local.process import free_port
from driftloop.registry import Registry
from driftloop.serving import v2
from driftloop.serving.bootstrap import ensure_models
from driftloop.serving.client import V2Client
from driftloop.serving.grpc_client import GrpcV2Client
from driftloop.serving.models import digits
from driftloop.serving.server import MLServerProcess
from driftloop.settings import Settings
from tests.fixtures.serving import LINES, astronaut_png, digit_png, render_text_png

pytestmark = pytest.mark.integration


def objects_jpeg() -> bytes:
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def family_inputs(speech_set: list[tuple[str, bytes]]) -> dict[str, bytes]:
    return {
        "speech": speech_set[2][1],
        "ocr": render_text_png(LINES[1]),
        "faces": astronaut_png(),
        "objects": objects_jpeg(),
        "digits": digit_png(digits.load_dataset().X[7]),
    }


def grpc_target(settings: Settings) -> str:
    return f"127.0.0.1:{settings.serving_grpc_port}"


def test_every_family_answers_binary_paths_as_the_json_path(
    mlserver: Any, family_inputs: dict[str, bytes]
) -> None:
    with (
        V2Client(mlserver.url, timeout_s=60) as rest,
        GrpcV2Client(grpc_target(mlserver.settings)) as grpc,
    ):
        for model, data in family_inputs.items():
            via_json = rest.infer_bytes(model, data, binary=False, emit=False)
            rid = f"bin-{model}-{uuid.uuid4().hex[:8]}"
            via_rest = rest.infer_binary(model, data, request_id=rid, emit=False)
            gid = f"grpc-{model}-{uuid.uuid4().hex[:8]}"
            via_grpc = grpc.infer_bytes(model, data, request_id=gid, emit=False)
            assert via_json.output, model
            assert via_rest.output == via_json.output, model
            assert via_grpc.output == via_json.output, model
            assert (via_rest.id, via_grpc.id) == (rid, gid)
            champion = mlserver.registry.alias(model, "champion")
            assert via_json.version == via_rest.version == via_grpc.version == champion


def test_binary_rest_answers_with_the_json_paths_headers(mlserver: Any) -> None:
    png = digit_png(digits.load_dataset().X[3])
    r = httpx.post(
        f"{mlserver.url}/v2/models/digits/infer",
        content=png,
        headers={
            "content-type": "image/png",
            "x-request-id": "bin-headers-1",
            v2.EMIT_HEADER: "off",
        },
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == r.headers["ce-id"] == "bin-headers-1"
    assert r.headers[v2.VERSION_HEADER] == mlserver.registry.alias("digits", "champion")
    body = r.json()
    assert body["id"] == "bin-headers-1" and body["model_name"] == "digits"
    assert v2.decode_outputs(body["outputs"])["label"] == 3


def test_bad_binary_inputs_are_4xx_naming_the_field(mlserver: Any) -> None:
    png = astronaut_png()
    url = f"{mlserver.url}/v2/models/faces/infer"
    # declared as one media type, the bytes another
    r = httpx.post(url, content=png, headers={"content-type": "audio/wav"}, timeout=60)
    assert r.status_code == 415
    assert r.json()["error"].startswith("content-type:")
    assert r.json()["fields"][0]["field"] == "content-type"
    # not a media type the binary path takes
    r = httpx.post(url, content=png, headers={"content-type": "text/plain"}, timeout=60)
    assert r.status_code == 415 and r.json()["error"].startswith("content-type:")
    # truncated
    r = httpx.post(url, content=png[:3000], headers={"content-type": "image/png"}, timeout=60)
    assert r.status_code == 400 and "input: not a readable image/png image" in r.text
    # no bytes at all
    r = httpx.post(
        url, content=b"", headers={"content-type": "application/octet-stream"}, timeout=60
    )
    assert r.status_code == 400 and "input: input is empty" in r.text
    with V2Client(mlserver.url) as rest:
        with pytest.raises(UnsupportedMediaType, match="content-type"):
            rest.infer_binary("faces", png, content_type="image/jpeg")
    with GrpcV2Client(grpc_target(mlserver.settings)) as grpc:
        with pytest.raises(BadRequest, match="input: not a readable image/png image"):
            grpc.infer_bytes("faces", png[:3000])
        with pytest.raises(BadRequest, match="input"):
            grpc.infer_bytes("speech", b"RIFF\x00\x00\x00\x00WAVEfmt ")


def test_app_clients_predict_raw_over_rest_and_grpc(mlserver: Any) -> None:
    png = digit_png(digits.load_dataset().X[5])
    target = grpc_target(mlserver.settings)
    with (
        Client(source="test-binary", serving_url=mlserver.url) as rest,
        Client(source="test-binary", serving_grpc=target) as grpc,
    ):
        a = rest.predict("digits", png, request_id="app-rest-1")
        b = grpc.predict("digits", png, request_id="app-grpc-1")
        tensor = grpc.predict("digits", digits.load_dataset().X[:2].tolist())
    assert (a.id, b.id) == ("app-rest-1", "app-grpc-1")
    assert a.output["label"] == b.output["label"] == 5
    assert tensor.output["labels"] == [0, 1]

    async def aio() -> Any:
        async with AsyncClient(source="test-binary", serving_grpc=target) as c:
            return await c.predict("faces", astronaut_png(), request_id="app-aio-1")

    p = asyncio.run(aio())
    assert p.id == "app-aio-1" and p.output["labels"] == ["face"]


# ---------------------------------------------------------------- events and kept inputs


@pytest.fixture(scope="module")
def logging_server(
    kafka: Any,
    s3: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[MLServerProcess]:
    """Digits with every input kept (policy ``inputs.mode: all``) on the real broker and S3."""
    tmp = tmp_path_factory.mktemp("binary-logging")
    policies = tmp / "policies"
    policies.mkdir()
    (policies / "digits.yaml").write_text(
        yaml.safe_dump(
            {
                "model": "digits",
                "training": {"recent_share": 0.3, "min_feedback_rows": 1},
                "inputs": {"mode": "all"},
            }
        )
    )
    settings = Settings(
        state_dir=tmp,
        kafka_bootstrap=kafka.bootstrap,
        blob_url=f"s3://{s3.new_bucket()}/driftloop",
        s3_endpoint_url=s3.endpoint_url,
        s3_access_key_id=s3.access_key,
        s3_secret_access_key=s3.secret_key,
        serving_models="digits",
        serving_http_port=free_port(),
        serving_grpc_port=free_port(),
        serving_metrics_port=free_port(),
        policy_dir=Path(policies),
    )
    ensure_models(Registry(open_store(settings.resolved_blob_url, settings)), ["digits"])
    server = MLServerProcess(settings, tmp / "server", tmp / "mlserver.log").start(180)
    yield server
    server.stop()


def test_binary_paths_emit_events_with_their_kept_inputs(
    logging_server: MLServerProcess, kafka: Any
) -> None:
    s = logging_server.settings
    ds = digits.load_dataset()
    tag = uuid.uuid4().hex[:8]
    sent: dict[str, bytes] = {}
    with V2Client(logging_server.url) as rest, GrpcV2Client(grpc_target(s)) as grpc:
        for i in range(2):
            png = digit_png(ds.X[i])
            pid = f"rest-bin-{tag}-{i}"
            assert rest.infer_binary("digits", png, request_id=pid).id == pid
            sent[pid] = png
            png = digit_png(ds.X[10 + i])
            pid = f"grpc-raw-{tag}-{i}"
            assert grpc.infer_bytes("digits", png, request_id=pid).id == pid
            sent[pid] = png
    deadline = time.monotonic() + 60
    found: dict[str, Any] = {}
    while time.monotonic() < deadline and set(found) != set(sent):
        found = {e.id: e for e in kafka.read_events(topics.PREDICTIONS) if e.id in sent}
        time.sleep(0.5)
    assert set(found) == set(sent)
    store = open_store(s.resolved_blob_url, s)
    deadline = time.monotonic() + 30
    refs = {pid: e.data.get("input_ref") for pid, e in found.items()}
    assert all(
        isinstance(r, str) and r.startswith("inputs/model=digits/") for r in refs.values()
    ), refs
    while time.monotonic() < deadline and not all(store.exists(r) for r in refs.values()):
        time.sleep(0.5)
    # the kept input is the file that was sent, byte for byte
    assert {pid: store.get(r) for pid, r in refs.items()} == sent
