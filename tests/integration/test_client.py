"""driftloop.client against the real pieces: feedback-intake (functions-framework) on real
Kafka, MLServer with the registry's models. Retries through a real broker outage keep the
event's (source, id) and wait as long as the server's Retry-After asks."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import httpx
import pytest

from driftloop import events as ev
from driftloop import topics
from driftloop.client import AsyncClient, Client, Feedback, RetryPolicy
from driftloop.errors import BadRequest, PayloadTooLarge, Unauthorized, ValidationFailed
from driftloop.local.process import stop_pid
from driftloop.settings import Settings
from tests.fixtures.intake import start_intake_server, unique_source

TOKEN = "client-test-token"


@pytest.fixture
def own_intake(own_kafka, tmp_path):
    server = start_intake_server(
        {"DRIFTLOOP_KAFKA_BOOTSTRAP": own_kafka.bootstrap, "DRIFTLOOP_INTAKE_SEND_TIMEOUT_S": "3",
         "DRIFTLOOP_INTAKE_RETRY_AFTER_S": "2", "DRIFTLOOP_INTAKE_TOKENS": TOKEN},
        tmp_path / "intake.log",
    )
    yield server
    stop_pid(server.proc.pid)


def test_feedback_retries_a_broker_outage_with_one_identity(own_intake, own_kafka):
    seen: list[tuple[float, float, int, str | None, str | None]] = []

    def record(r: httpx.Response) -> None:
        r.read()  # so r.elapsed (request sent -> answer read) is known
        now = time.monotonic()
        seen.append((now - r.elapsed.total_seconds(), now, r.status_code,
                     r.request.headers.get("ce-id"), r.headers.get("retry-after")))

    src = unique_source()
    with Client(source=src, intake_url=own_intake.url, token=TOKEN, on_response=[record],
                retry=RetryPolicy(deadline_s=180)) as client:
        assert client.feedback("pred-warm", model="digits", truth=1).source == src
        own_kafka.stop()
        restart = threading.Timer(8, own_kafka.start)
        restart.start()
        try:
            accepted = client.feedback("pred-1", model="digits", truth=3)
        finally:
            restart.join()
    tries = seen[1:]
    assert tries[0][2] == 503 and tries[-1][2] == 202
    assert {ce_id for *_, ce_id, _ in tries} == {accepted.id}, "a retry changed the id"
    for (_, answered, status, _, retry_after), (sent, *_) in itertools.pairwise(tries):
        assert status == 503 and retry_after == "2"
        assert sent - answered >= 2, "the client retried before the server's Retry-After"
    records = [e for e in own_kafka.read_events(topics.FEEDBACK) if e.source == src]
    assert {e.id for e in records if e.data["prediction_id"] == "pred-1"} == {accepted.id}


def test_token_is_sent_and_a_refusal_is_unauthorized(own_intake):
    with Client(source=unique_source(), intake_url=own_intake.url) as client, \
            pytest.raises(Unauthorized) as info:
        client.feedback("pred-1", model="digits", truth=1)
    assert info.value.status == 401


def test_field_errors_of_the_server_are_raised_together(intake_server):
    with Client(source=unique_source(), intake_url=intake_server.url) as client:
        with pytest.raises(ValidationFailed) as info:
            client.feedback("pred with\ttab", model="digits", reward="high")
        assert info.value.status == 400
        assert {f.field for f in info.value.fields} == {"data.prediction_id", "data.reward"}
        good = client.make_feedback("pred-ok", model="digits", truth=2)
        bad = client.make_feedback("pred-bad", model="../etc", truth=2)
        result = client.feedback_batch([good, bad])
    assert result.accepted == 1
    (refused,) = result.rejected
    assert refused.index == 1 and refused.id == bad.id and refused.status == 400
    assert [f.field for f in refused.fields] == ["data.model"]


def test_a_batch_over_the_intake_cap_goes_as_several_requests(intake_server, kafka):
    # Intake refuses a batch over its event cap with 413 for the whole request; the client
    # splits instead, and each event keeps its (source, id) and its index in the result.
    src = unique_source()
    answers: list[int] = []
    with Client(source=src, intake_url=intake_server.url, max_batch_events=2,
                on_response=[lambda r: answers.append(r.status_code)]) as client:
        items = [client.make_feedback(f"pred-{i}", model="digits", truth=i) for i in range(4)]
        items.append(client.make_feedback("pred-bad", model="../etc", truth=0))
        result = client.feedback_batch(items)
    assert len(answers) == 3
    assert result.accepted == 4
    assert [(r.index, r.id) for r in result.rejected] == [(4, items[4].id)]
    assert [i.id for i in result.items] == [f.id for f in items]
    archived = {e.id for e in kafka.read_events(topics.FEEDBACK) if e.source == src}
    assert archived == {f.id for f in items[:4]}


def test_async_client_batch_and_single(intake_server, kafka):
    src = unique_source()

    async def run() -> tuple[list[str], str]:
        async with AsyncClient(source=src, intake_url=intake_server.url) as client:
            items = [client.make_feedback(f"pred-{i}", model="digits", truth=i)
                     for i in range(5)]
            batch = await client.feedback_batch(items)
            assert batch.accepted == 5 and not batch.rejected
            one = await client.feedback("pred-9", model="digits", reward=0.5)
            return [f.id for f in items], one.id

    ids, single = asyncio.run(run())
    archived = {e.id for e in kafka.read_events(topics.FEEDBACK) if e.source == src}
    assert archived == {*ids, single}


def test_predict_then_feedback_on_the_prediction(mlserver, intake_server, kafka):
    from sklearn.datasets import load_digits

    digits = load_digits()
    src = unique_source()
    with Client(source=src, serving_url=mlserver.url, intake_url=intake_server.url,
                kafka=Settings(kafka_bootstrap=kafka.bootstrap)) as client:
        pred = client.predict("digits", [digits.data[0].tolist()], request_id=f"{src}-p1")
        assert pred.id == f"{src}-p1" and pred.model == "digits"
        assert pred.version == mlserver.registry.alias("digits", "champion")
        assert "label" in pred.output
        accepted = client.feedback(pred, truth=int(digits.target[0]))
        with pytest.raises(BadRequest) as info:
            client.predict("digits", [[1.0, 2.0]])
        assert 400 <= info.value.status < 500
    (event,) = [e for e in kafka.read_events(topics.FEEDBACK) if e.source == src]
    assert event.id == accepted.id
    assert event.data["prediction_id"] == pred.id and event.data["version"] == pred.version


def test_send_input_lands_on_the_raw_topic_inline(kafka):
    from tests.fixtures.serving import digit_png

    png = digit_png([0, 16] * 32)
    settings = Settings(kafka_bootstrap=kafka.bootstrap)
    with Client(source=unique_source(), kafka=settings) as client:
        ident = client.send_input("ocr", png, content_type="image/png")
        with pytest.raises(PayloadTooLarge) as info:
            client.send_input("ocr", b"\0" * (settings.flink_max_input_bytes + 1),
                              content_type="image/png")
        assert info.value.fields[0].field == "data"
    (event,) = [e for e in kafka.read_events(topics.raw("image")) if e.id == ident]
    assert event.data == png and event.extensions["model"] == "ocr"
    assert event.datacontenttype == "image/png"


def test_one_models_inputs_spread_over_the_raw_partitions(kafka):
    """Raw inputs are keyed by identity, not model: a preprocess job's subtasks all get
    work from one model's traffic, and a resent input goes where its first copy went."""
    from driftloop import bus

    settings = Settings(kafka_bootstrap=kafka.bootstrap)
    source = unique_source()
    with Client(source=source, kafka=settings) as client:
        ids = [client.send_input("ocr", b"\x89PNG %d" % i, content_type="image/png")
               for i in range(24)]
        client.send_input("ocr", b"\x89PNG 0", content_type="image/png", id=ids[0])  # resent
    mine = [r for r in kafka.read_records(topics.raw("image"))
            if dict(r.headers).get("ce_source") == source.encode()]
    assert len(mine) == 25
    parts: dict[str, set[int]] = {}
    for r in mine:
        parts.setdefault(dict(r.headers)["ce_id"].decode(), set()).add(r.partition)
    assert len(set().union(*parts.values())) == settings.topic_partitions  # spread
    assert parts[ids[0]] == {next(iter(parts[ids[0]]))}  # both copies in one partition
    first = next(r for r in mine if r.key is not None)
    assert first.key.decode() == bus.input_key(ev.from_kafka(first.value, first.headers))


def test_feedback_identity_is_fixed_when_built():
    fb = Feedback(source="app", prediction_id="p", model="digits", truth=1)
    assert fb.to_event().id == fb.to_event().id == fb.id
    assert Feedback.from_dict(fb.to_dict()) == fb
