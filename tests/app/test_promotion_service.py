"""promote on the real Kafka broker, S3 server and Prometheus: the guard fails closed, one
promotion per model at a time, rollbacks walk back through promotions, a broken champion
is a stated gate outcome, and hostile model.trained events are 4xx."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
from typer.testing import CliRunner

from driftloop import events as ev
from driftloop import topics
from driftloop.policy import load_policy
from driftloop.promotion import routing
from driftloop.promotion.service import Promotion, PromotionService
from driftloop.retrain.pipeline import train_model
from driftloop.retrain.state import iso, now_utc
from driftloop.serving.server import settings_env
from tests.fixtures.loop import LoopEnv, function_client, post_event, write_policy
from tests.fixtures.monitoring import start_monitoring

OPEN_GATE = {"margin": -1.0, "max_holdout_drop": 1.0}


def trained(model: str, version: str, **extra) -> ev.Event:
    return ev.new_event(ev.MODEL_TRAINED, "driftloop/retrain",
                        {"model": model, "version": version, **extra}, datacontenttype=ev.JSON)


def new_version(env: LoopEnv, run_id: str, **params) -> str:
    policy = load_policy(env.settings.policy_dir, "digits")
    return train_model(env.settings, policy, run_id=run_id, params=params or None,
                       store=env.store, emit=False).version


def promoter(env: LoopEnv, **settings) -> PromotionService:
    return PromotionService(env.settings.model_copy(update=settings), store=env.store)


def publish_labeled(env: LoopEnv, versions: dict[str, int]) -> None:
    """Correct labeled digits records per version, as Flink's join writes them."""
    from driftloop.bus import make_producer, publish
    from driftloop.demo.traffic import labeled_record

    records = []
    for version, n in versions.items():
        for i in range(n):
            label = i % 10
            pred = ev.new_event(ev.PREDICTION, "driftloop/serving/digits",
                                {"model": "digits", "version": version,
                                 "output": {"label": label}}, datacontenttype=ev.JSON)
            records.append(labeled_record(pred, {"label": label}, "guard-test-app"))
    producer = make_producer(env.settings)
    try:
        publish(producer, topics.LABELED, records, key="digits")
    finally:
        producer.close(timeout=5)


def wait_for(fn, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.2)
    raise TimeoutError(what)


# ---------------------------------------------------------------- the guard fails closed


def test_unscraped_model_server_never_promotes_on_quality_alone(loop_env, monitoring):
    """Prometheus answers but holds no series of the model server: labeled quality of both
    versions is there and good, yet the canary waits for request, error and latency
    evidence and, without it at the end of the bake and its grace, rolls back."""
    write_policy(loop_env.settings.policy_dir, promotion=OPEN_GATE)
    v2 = new_version(loop_env, "unscraped")
    # The last verdict (at the end of the bake and its grace) must have judged quality
    # (and found it good): the labeled records, published just after the canary started,
    # are read by then even on a loaded machine (a window starts where the bake says).
    svc = promoter(loop_env, prometheus_url=monitoring.prometheus_url, promote_bake_s=5.0,
                   promote_evidence_grace_s=2.0)
    r = post_event(function_client("promote", "promote", svc), trained("digits", v2))
    assert r.status_code == 202 and r.json()["phase"] == "canary", r.text
    publish_labeled(loop_env, {"1": 20, v2: 20})
    final = svc.wait("digits", v2, timeout_s=120)
    assert final is not None and final.phase == "rolledback", final
    assert final.reason.startswith("no evidence: error_rate: no request metrics for v2"), \
        final.reason
    assert "not scraped" in final.reason and "latency" in final.reason
    waits = [v for v in final.verdicts if v["verdict"] == "wait"]
    assert waits and all(v["reason"].startswith("waiting for evidence:") for v in waits)
    last = {c["name"]: c for c in final.verdicts[-1]["checks"]}
    assert last["quality"]["judged"] and last["quality"]["ok"]  # quality alone is not enough
    assert loop_env.registry.alias("digits", "champion") == "1"
    assert loop_env.registry.alias("digits", "challenger") is None
    assert routing.load(loop_env.store, "digits").weights == {}
    svc.close()


def test_prometheus_stopped_during_the_bake_rolls_back_for_lack_of_evidence(loop_env,
                                                                           tmp_path):
    prom = start_monitoring(tmp_path / "monitoring")
    try:
        write_policy(loop_env.settings.policy_dir, promotion=OPEN_GATE)
        v2 = new_version(loop_env, "prom-stopped")
        # Prometheus is stopped within a few seconds of the first verdict: the grace leaves
        # verdicts that find it unavailable before the last.
        svc = promoter(loop_env, prometheus_url=prom.prometheus_url, promote_bake_s=6.0,
                       promote_evidence_grace_s=4.0)
        assert svc.start("digits", v2)["phase"] == "canary"
        publish_labeled(loop_env, {"1": 20, v2: 20})
        first = wait_for(lambda: svc.verdicts("digits", v2), 60, "a first verdict")
        assert first[0]["verdict"] == "wait" and "unavailable" not in first[0]["reason"]
    finally:
        prom.stop()
    final = svc.wait("digits", v2, timeout_s=120)
    assert final is not None and final.phase == "rolledback", final
    assert final.reason.startswith("no evidence: error_rate: no request metrics for v2")
    assert f"Prometheus at {prom.prometheus_url} unavailable" in final.reason, final.reason
    assert any("unavailable" in v["reason"] and v["verdict"] == "wait" for v in final.verdicts)
    assert loop_env.registry.alias("digits", "champion") == "1"
    svc.close()


class Traffic:
    """An app asking MLServer for digits answers until stopped (a thread)."""

    def __init__(self, url: str) -> None:
        from driftloop.serving.models import digits

        self.url, self.x = url, digits.load_dataset().X[:1].tolist()
        self.answered: list[str] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from driftloop.serving.client import V2Client

        with V2Client(self.url, timeout_s=10) as client:
            while not self.stopped.is_set():
                with contextlib.suppress(Exception):
                    self.answered.append(str(client.infer_tensor("digits", self.x).version))
                time.sleep(0.02)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=15)


BAKE_S = 12.0
"""The bake on MLServer: 24 scrape intervals of 0.5 s, 22 expected after the slack."""
GAP_S = (2.0, 7.0)
"""When Prometheus is stopped and started again, in seconds after the canary started: it
misses at least 10 of the 24 scrapes (coverage 14/22 at best, under 0.8) and has 3 s to be
ready again 2 s or more before the bake's end."""


def bake_on_mlserver(loop_env: LoopEnv, tmp_path, *, gap: bool) -> tuple[Promotion, list[str]]:
    """v2's canary on a model server of its own (digits) under steady traffic, scraped by
    a Prometheus every 0.5 s, with labeled records of both versions: every figure is there
    and good. ``gap``: Prometheus is stopped ``GAP_S[0]`` s into the ``BAKE_S`` bake and
    started again at ``GAP_S[1]``. The final record, and the versions that answered."""
    from concurrent.futures import ThreadPoolExecutor

    from driftloop.local.process import free_port, http_ok, spawn, stop_pid, wait_until
    from driftloop.monitoring import config
    from driftloop.serving.server import MLServerProcess

    settings = loop_env.settings.model_copy(update={
        "serving_http_port": free_port(), "serving_grpc_port": free_port(),
        "serving_metrics_port": free_port(), "serving_models": "digits"})
    server = MLServerProcess(settings, tmp_path / "server", tmp_path / "mlserver.log")
    # The latency slack of policies/digits.yaml: a p99 of a few dozen requests lies within
    # the histogram's 50-100 ms bucket, so a loaded machine alone may put it 50 ms higher.
    write_policy(loop_env.settings.policy_dir,
                 promotion={**OPEN_GATE, "min_latency_requests": 10, "latency_slack_s": 0.1})
    # Prometheus starts and v2 trains while MLServer starts (neither needs the other).
    with ThreadPoolExecutor(2) as pool:
        monitoring = pool.submit(start_monitoring, tmp_path / "monitoring",
                                 serving_metrics_port=settings.serving_metrics_port)
        trained = pool.submit(new_version, loop_env, "prom-gap")
        try:
            server.start(timeout_s=180)  # stops the server itself when it fails
        except BaseException:
            with contextlib.suppress(Exception):
                monitoring.result().stop()
            raise
    try:
        prom = monitoring.result()
    except BaseException:
        server.stop()
        raise
    traffic = Traffic(server.url)
    svc = None
    try:
        v2 = trained.result()
        # The champion's series is scraped before the canary starts.
        prom.client().wait_for('driftloop_model_requests_total{model="digits",version="1"}',
                               lambda got: bool(got), timeout_s=30)
        svc = promoter(loop_env, prometheus_url=prom.prometheus_url, serving_url=server.url,
                       promote_bake_s=BAKE_S, promote_evidence_grace_s=4.0,
                       scrape_interval_s=prom.settings.scrape_interval_s)
        assert svc.start("digits", v2)["phase"] == "canary"
        started = time.monotonic()
        publish_labeled(loop_env, {"1": 20, v2: 20})
        wait_for(lambda: svc.verdicts("digits", v2), 30, "a first verdict")
        if gap:
            time.sleep(max(GAP_S[0] - (time.monotonic() - started), 0))
            prometheus = prom.procs.pop()
            stop_pid(prometheus.pid)
            time.sleep(max(GAP_S[1] - (time.monotonic() - started), 0))
            log = tmp_path / "monitoring" / "logs" / "prometheus-again.log"
            proc = spawn(config.prometheus_argv(prom.files, prom.settings.prometheus_port),
                         log_path=log)
            prom.procs.append(proc)
            wait_until(lambda: http_ok(f"{prom.prometheus_url}/-/ready"), timeout_s=30,
                       what="prometheus again", alive=lambda: proc.poll() is None,
                       log_path=log)
            assert time.monotonic() - started < BAKE_S - 2, "Prometheus back too late"
        final = svc.wait("digits", v2, timeout_s=120)
    finally:
        traffic.stop()
        if svc is not None:
            svc.close()
        prom.stop()
        server.stop()
    assert final is not None
    return final, traffic.answered


def test_prometheus_stopped_for_most_of_the_bake_never_promotes(loop_env, tmp_path):
    """Prometheus stopped for most of the bake and started again before its end: the
    increases since the canary started span the gap as if nothing happened in it, and
    every other figure is there and good, yet the bake lacks its scrapes: the canary
    waits, then rolls back for lack of evidence (scrape_coverage)."""
    final, answered = bake_on_mlserver(loop_env, tmp_path, gap=True)
    assert final.phase == "rolledback", final
    assert final.reason.startswith("no evidence: scrape_coverage: Prometheus scraped"), \
        final.reason
    last = {c["name"]: c for c in final.verdicts[-1]["checks"]}
    # Everything else was there and good: the gap alone keeps the canary from promotion.
    assert all(c["judged"] and c["ok"] for n, c in last.items() if n != "scrape_coverage")
    assert last["scrape_coverage"]["value"] < 0.8
    assert final.version in answered  # the challenger answered during the bake
    assert loop_env.registry.alias("digits", "champion") == "1"


def test_a_bake_prometheus_scraped_throughout_promotes(loop_env, tmp_path):
    """The same bake without the gap: the scrapes cover it (the slack absorbs the first
    and last interval) and the canary is promoted."""
    final, _ = bake_on_mlserver(loop_env, tmp_path, gap=False)
    assert final.phase == "promoted", final
    last = {c["name"]: c for c in final.verdicts[-1]["checks"]}
    assert last["scrape_coverage"]["judged"] and last["scrape_coverage"]["value"] >= 0.8
    assert loop_env.registry.alias("digits", "champion") == final.version


# ---------------------------------------------------------------- one promotion at a time


def test_one_promotion_per_model_at_a_time(loop_env, kafka):
    write_policy(loop_env.settings.policy_dir, promotion=OPEN_GATE)
    v2, v3 = new_version(loop_env, "first"), new_version(loop_env, "second")
    svc = promoter(loop_env, promote_bake_s=600.0)  # v2's canary outlives this test's steps
    client = function_client("promote", "promote", svc)
    r = post_event(client, trained("digits", v2))
    assert r.status_code == 202 and r.json()["phase"] == "canary", r.text
    before = routing.load(loop_env.store, "digits")
    # The canary's windows start before its routing changed: its first answers are in them.
    assert svc.state("digits", v2).canary_started_ms <= before.updated * 1000

    second = post_event(client, trained("digits", v3))
    assert second.status_code == 409, second.text
    assert f"v{v2}'s promotion is in progress" in second.json()["message"]
    assert svc.state("digits", v3) is None  # nothing of v3 was started or recorded
    assert loop_env.registry.alias("digits", "challenger") == v2
    assert routing.load(loop_env.store, "digits").weights == before.weights
    assert svc.state("digits", v2).phase == "canary"

    env = {**settings_env(loop_env.settings),
           "DRIFTLOOP_POLICY_DIR": str(loop_env.settings.policy_dir)}
    from driftloop.cli import app

    runner = CliRunner()
    hand = runner.invoke(app, ["promote", "--model", "digits", "--version", v3], env=env)
    assert hand.exit_code == 1 and "in progress" in hand.output
    assert loop_env.registry.alias("digits", "champion") == "1"

    # The rollback names the version it undoes: v2's canary, the champion stays v1.
    out = svc.rollback("digits", reason="ops stop the canary")
    assert (out["version"], out["restored_version"]) == (v2, "1")
    assert svc.lease("digits") is None
    assert loop_env.registry.alias("digits", "champion") == "1"
    rolled = [e for e in kafka.read_events(topics.EVENTS) if e.type == ev.MODEL_ROLLEDBACK
              and e.data.get("version") == v2]
    assert rolled[-1].data["restored_version"] == "1"
    # Now v3 may go.
    r = post_event(client, trained("digits", v3))
    assert r.status_code == 202 and r.json()["phase"] == "canary", r.text
    svc.rollback("digits", version=v3)
    assert svc.state("digits", v2).reason == "ops stop the canary"  # v2's record is its own
    svc.close()


def test_two_replicas_starting_two_versions_at_once_run_one(loop_env):
    """Two promote replicas (no shared memory) get model.trained for v2 and v3 at the same
    moment: the blob-store lease lets exactly one through, the other is a Conflict."""
    from concurrent.futures import ThreadPoolExecutor

    from driftloop.errors import Conflict

    write_policy(loop_env.settings.policy_dir, promotion=OPEN_GATE)
    v2, v3 = new_version(loop_env, "replica-a"), new_version(loop_env, "replica-b")
    a, b = promoter(loop_env, promote_bake_s=600.0), promoter(loop_env, promote_bake_s=600.0)

    def start(svc: PromotionService, version: str):
        try:
            return svc.start("digits", version)["phase"]
        except Conflict as e:
            return f"conflict: {e.message}"

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(start, (a, b), (v2, v3)))
    assert outcomes[0] == "canary" and outcomes[1].startswith("conflict:"), outcomes
    running = loop_env.registry.alias("digits", "challenger")
    assert running in (v2, v3) and svc_lease_version(a) == running
    other = v3 if running == v2 else v2
    assert a.state("digits", other) is None
    a.rollback("digits", version=running)
    assert a.lease("digits") is None and loop_env.registry.alias("digits", "champion") == "1"
    a.close()
    b.close()


def svc_lease_version(svc: PromotionService) -> str | None:
    lease = svc.lease("digits")
    return lease.version if lease else None


def test_rollbacks_walk_back_through_promotions(loop_env, kafka):
    v2, v3 = new_version(loop_env, "walk-a"), new_version(loop_env, "walk-b")
    svc = promoter(loop_env)
    history_of = lambda: [c.to_dict() for c in loop_env.registry.history("digits", "champion")]  # noqa: E731
    assert svc.promote("digits", v2)["previous_version"] == "1"
    assert svc.promote("digits", v3)["previous_version"] == v2
    seen = history_of()

    first = svc.rollback("digits")
    assert (first["version"], first["restored_version"]) == (v3, v2)
    second = svc.rollback("digits")
    assert (second["version"], second["restored_version"]) == (v2, "1")
    assert loop_env.registry.alias("digits", "champion") == "1"
    with pytest.raises(Exception, match="replaced no earlier champion"):
        svc.rollback("digits")  # v1 replaced nothing: never back up to v2
    assert loop_env.registry.alias("digits", "champion") == "1"
    with pytest.raises(Exception, match="neither in canary nor the champion"):
        svc.rollback("digits", version=v3)

    after = history_of()
    assert after[:len(seen)] == seen and len(after) == len(seen) + 2  # append-only
    assert [h["version"] for h in after[-2:]] == [v2, "1"]
    phases = [(h["version"], h["phase"]) for h in svc.history("digits")]
    assert phases == [(v2, "promoted"), (v3, "promoted"), (v3, "rolledback"),
                      (v2, "rolledback")]
    assert svc.state("digits", v2).champion == "1" and svc.state("digits", v3).champion == v2
    svc.close()


def test_resume_never_moves_the_champion(loop_env):
    """A record left in 'canary' whose canary is gone (here: the version became champion
    and no lease is held) is abandoned on resume; aliases and traffic stay."""
    v2 = new_version(loop_env, "stale-canary")
    loop_env.registry.set_alias("digits", "champion", v2, reason="promoted elsewhere")
    svc = promoter(loop_env)
    svc.ledger.save(Promotion("digits", v2, "1", "canary", iso(now_utc()),
                              canary_started_ms=int((time.time() - 60) * 1000)))
    assert svc.resume() == []
    assert svc.state("digits", v2).phase == "abandoned"
    assert loop_env.registry.alias("digits", "champion") == v2
    time.sleep(1)  # an (old) bake thread would have rolled back by now
    assert loop_env.registry.alias("digits", "champion") == v2
    svc.close()


# ---------------------------------------------------------------- gate outcomes, no-ops, 4xx


def test_missing_or_unreadable_champion_is_a_stated_gate_outcome(loop_env):
    # Trained first: training scores the champion too.
    bad, good, third = (new_version(loop_env, "weak", C=0.01), new_version(loop_env, "good"),
                        new_version(loop_env, "third"))
    for name in loop_env.registry.get("digits", "1").files:
        loop_env.store.delete(loop_env.registry.artifact_key("digits", "1", name))
    svc = promoter(loop_env)
    client = function_client("promote", "promote", svc)
    r = post_event(client, trained("digits", bad))
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["phase"] == "rejected" and "v1's artifact is missing" in \
        body["gate"]["champion_problem"]
    assert "judged alone" in body["gate"]["detail"] and body["gate"]["champion"] is None
    assert svc.lease("digits") is None
    assert loop_env.registry.alias("digits", "champion") == "1"

    r = post_event(client, trained("digits", good))
    assert r.status_code == 202 and r.json()["phase"] == "promoted", r.text
    assert "artifact is missing" in r.json()["reason"]
    assert loop_env.registry.alias("digits", "champion") == good

    # Unreadable: the champion's bytes are garbage.
    for name in loop_env.registry.get("digits", good).files:
        loop_env.store.put(loop_env.registry.artifact_key("digits", good, name), b"\x00garbage")
    r = post_event(client, trained("digits", third))
    assert r.status_code == 202 and r.json()["phase"] == "promoted", r.text
    assert "cannot be scored" in r.json()["gate"]["champion_problem"]
    svc.close()


def test_trained_for_the_current_champion_is_a_noop(loop_env):
    svc = promoter(loop_env)
    client = function_client("promote", "promote", svc)
    before = loop_env.registry.history("digits", "champion")
    r = post_event(client, trained("digits", "1"))
    assert r.status_code == 200, r.text
    assert r.json()["noop"] is True and r.json()["phase"] == "champion"
    assert loop_env.registry.history("digits", "champion") == before  # no v1 -> v1 entry
    assert svc.state("digits", "1") is None and svc.history("digits") == []
    assert svc.promote("digits", "1")["noop"] is True
    assert loop_env.registry.history("digits", "champion") == before
    svc.close()


@pytest.mark.parametrize("version", ["../1", "", "0", "x" * 100_000, "1/../../etc"])
def test_trained_with_a_hostile_version_is_400(loop_env, version):
    svc = promoter(loop_env)
    client = function_client("promote", "promote", svc)
    r = post_event(client, trained("digits", version))
    assert r.status_code == 400, r.text[:300]
    assert r.json()["fields"] == [{"field": "data.version", "rule": "version",
                                   "message": r.json()["fields"][0]["message"]}]
    assert "positive integer" in r.json()["fields"][0]["message"]
    assert len(r.content) < 2000  # the value is not echoed back
    both = post_event(client, trained("../x", version, parent_version="../2"))
    assert both.status_code == 400
    assert [f["field"] for f in both.json()["fields"]] == ["data.model", "data.version",
                                                           "data.parent_version"]
    assert list(loop_env.store.list("promotions/")) == []
    svc.close()
