"""The one HTTP edge every function answers through (``driftloop.function_service``):
probes, 405 with ``Allow``, 404, 413 and JSON errors are the same for feedback-intake,
drift-check, retrain-trigger and promote — through functions-framework's app and when a
service is called in-process — and ``FunctionHost`` runs any ``Service`` through its
lifecycle (built on the first real request, opened once, never for a probe)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import flask
import httpx
import pytest

from driftloop import events as ev
from driftloop.function_host import FunctionHost
from driftloop.function_service import FunctionService, Service
from driftloop.http import HEALTH_PATHS, Request
from driftloop.settings import Settings
from tests.fixtures.loop import LoopEnv, function_client

FUNCTIONS = {
    # name: (folder, target)
    "feedback-intake": ("feedback-intake", "intake"),
    "drift-check": ("drift-check", "drift_check"),
    "retrain-trigger": ("retrain-trigger", "retrain_trigger"),
    "promote": ("promote", "promote"),
}


def build(name: str, env: LoopEnv, settings: Settings) -> FunctionService:
    if name == "feedback-intake":
        from driftloop.intake import IntakeService

        return IntakeService(settings)
    if name == "drift-check":
        from driftloop.monitoring.check import DriftCheckService

        return DriftCheckService(settings, store=env.store)
    if name == "retrain-trigger":
        from driftloop.retrain.trigger import RetrainTrigger

        return RetrainTrigger(settings, store=env.store)
    from driftloop.promotion.service import PromotionService

    return PromotionService(settings, store=env.store, background=False)


LIMIT = 4096
SMALL = {"function_max_body_bytes": LIMIT, "intake_max_body_bytes": LIMIT}


@pytest.fixture(params=sorted(FUNCTIONS))
def fn(
    request: pytest.FixtureRequest, loop_env: LoopEnv
) -> Iterator[tuple[str, FunctionService, httpx.Client]]:
    name = request.param
    service = build(name, loop_env, loop_env.settings.model_copy(update=SMALL))
    folder, target = FUNCTIONS[name]
    yield name, service, function_client(folder, target, service)
    service.close()


def big_event() -> tuple[dict[str, str], bytes]:
    obj = {
        "specversion": "1.0",
        "id": "edge-1",
        "source": "test-edge",
        "type": ev.PING,
        "datacontenttype": "application/json",
        "data": {"pad": "x" * (2 * LIMIT)},
    }
    return {"content-type": ev.STRUCTURED}, json.dumps(obj).encode()


def test_probes_answer_the_same_everywhere(fn: Any) -> None:
    name, service, client = fn
    for path in HEALTH_PATHS:
        r = client.get(path)
        assert (r.status_code, r.json()) == (200, {"status": "ok"}), (name, path)
        assert client.head(path).status_code == 200, (name, path)
        answer = service.handle(Request.of("GET", path + "/", {}))
        assert (answer.status, json.loads(answer.body)) == (200, {"status": "ok"}), name
    r = client.post("/healthz", content=b"{}")
    assert r.status_code == 405 and r.headers["allow"] == "GET", name


def test_wrong_method_is_405_naming_post(fn: Any) -> None:
    name, service, client = fn
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        r = client.request(method, "/")
        assert r.status_code == 405, (name, method, r.text)
        assert r.headers["allow"] == "POST", (name, method)
        assert r.json()["error"] == "method_not_allowed", name
        answer = service.handle(Request.of(method, "/", {}))
        assert answer.status == 405 and answer.headers["allow"] == "POST", (name, method)


def test_body_over_the_limit_is_413_at_the_host_and_in_process(fn: Any) -> None:
    name, service, client = fn
    headers, body = big_event()
    r = client.post("/", headers=headers, content=body)
    assert r.status_code == 413, (name, r.text)
    expected = {"field": "body", "rule": "max-size", "message": f"at most {LIMIT} bytes"}
    assert r.json()["fields"] == [expected], name
    # The service alone refuses it too (callers in-process have no host in front).
    answer = service.handle(Request.post(headers, body))
    assert answer.status == 413, name
    assert json.loads(answer.body)["fields"] == [expected], name


def test_a_body_that_is_no_json_is_400_with_a_json_answer(fn: Any) -> None:
    name, _, client = fn
    r = client.post("/", headers={"content-type": ev.STRUCTURED}, content=b"{not json")
    assert r.status_code == 400, (name, r.text)
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"] in ("bad_request", "validation_failed"), name


def test_host_builds_on_first_use_and_opens_once(loop_env: LoopEnv) -> None:
    """Probes never build the service; the first real request builds and opens it once."""
    built: list[Service] = []
    opened: list[str] = []

    class Counted(FunctionService):
        def __init__(self, inner: FunctionService) -> None:
            self.inner, self.settings, self.routes = inner, inner.settings, inner.routes

        def open(self) -> None:
            opened.append("open")

        def handle(self, request: Request) -> Any:
            return self.inner.handle(request)

    def factory(_: Settings) -> Service:
        built.append(Counted(build("retrain-trigger", loop_env, loop_env.settings)))
        return built[-1]

    host = FunctionHost(factory)
    app = flask.Flask("edge-test")
    with app.test_request_context("/healthz", method="GET"):
        assert host(flask.request).status_code == 200
    assert built == [] and opened == []
    for _ in range(2):
        with app.test_request_context("/", method="PUT"):
            assert host(flask.request).status_code == 405
    assert len(built) == 1 and opened == ["open"]


COLD = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("main", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
heavy = ("numpy", "pydantic", "kafka", "prometheus_client", "driftloop.events",
         "driftloop.settings", "driftloop.function_service")
print(",".join(n for n in heavy if n in sys.modules))
"""


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_main_imports_no_heavy_module(name: str) -> None:
    """Cold start: a function's main.py names its factory without importing its service,
    so the health probes answer before pydantic, Kafka or numpy are loaded."""
    import subprocess
    import sys

    from driftloop.settings import PROJECT_ROOT

    main = PROJECT_ROOT / "functions" / FUNCTIONS[name][0] / "main.py"
    out = subprocess.run(
        [sys.executable, "-c", COLD, str(main)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=PROJECT_ROOT,
    )
    assert out.stdout.strip() == "", (name, out.stdout)
