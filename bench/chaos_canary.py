"""The canary part of the fault matrix: MLServer serving digits, Prometheus scraping it, and
the promote function's service (in-process) baking a new version as a canary, while an app
asks MLServer and sends each answer's truth to feedback-intake (Flink joins them: the guard
reads those labeled records). Faults 6 (SIGKILL MLServer) and 7 (Prometheus stopped) hit
the canary; the promotion must end in a rollback, never a promotion."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from bench.chaos_rig import Service, intake_url
from driftloop.local.process import free_port, http_ok

if TYPE_CHECKING:
    from bench.chaos_rig import Rig
    from driftloop.promotion.service import PromotionService
    from driftloop.settings import Settings

MODEL = "digits"
POLICY: dict[str, Any] = {
    "model": MODEL,
    "triggers": {"drift": {"min_share": 0.0}, "feedback_volume": {"min_events": 10_000_000}},
    "limits": {"cooldown_s": 600, "dedup_window_s": 3600, "max_concurrent": 1},
    "training": {"backend": "local", "recent_share": 0.3, "timeout_s": 300,
                 "min_feedback_rows": 0},
    # An open gate (any new version goes to canary); the guard decides.
    "promotion": {"margin": -1.0, "max_holdout_drop": 1.0, "canary_weight": 0.5,
                  "bake_s": 30, "poll_s": 1, "min_canary_samples": 10,
                  "max_quality_drop": 0.2, "max_error_rate": 0.05},
}


@dataclass
class Canary:
    settings: Settings
    mlserver: Service
    prometheus: Service
    service: PromotionService
    trained: int = 0
    owned: list[Any] = field(default_factory=list)

    @property
    def serving_url(self) -> str:
        return self.settings.resolved_serving_url

    def new_version(self, run_id: str) -> str:
        from driftloop.policy import load_policy
        from driftloop.retrain.pipeline import train_model

        policy = load_policy(self.settings.policy_dir, MODEL)
        return train_model(self.settings, policy, run_id=run_id, store=self.service.store,
                           emit=False).version

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.service.close()
        for s in (self.prometheus, self.mlserver):
            with contextlib.suppress(Exception):
                s.stop()


def start_canary(rig: Rig, progress: Any = print) -> Canary:
    """MLServer (digits) and Prometheus on free ports beside the rig, and the promote
    function's service on the rig's store; the registry gets digits v1 as champion."""
    from driftloop.monitoring import config
    from driftloop.promotion.service import PromotionService
    from driftloop.serving import server
    from driftloop.serving.bootstrap import ensure_models

    state = rig.settings.state_dir / "canary"
    policies = state / "policies"
    policies.mkdir(parents=True, exist_ok=True)
    (policies / f"{MODEL}.yaml").write_text(yaml.safe_dump(POLICY))
    http, metrics, prom_port = free_port(), free_port(), free_port()
    s = rig.settings.model_copy(update={
        "serving_http_port": http, "serving_grpc_port": free_port(),
        "serving_metrics_port": metrics, "serving_models": (MODEL,),
        "serving_url": f"http://127.0.0.1:{http}", "prometheus_port": prom_port,
        "prometheus_url": f"http://127.0.0.1:{prom_port}", "policy_dir": policies,
        "scrape_interval_s": 1.0, "promote_evidence_grace_s": 10.0,
    })
    from driftloop.blob import open_store
    from driftloop.registry import Registry

    store = open_store(s.resolved_blob_url, s)
    ensure_models(Registry(store), [MODEL])
    folder = state / "serving"
    server.write_config(s, folder)
    url = s.resolved_serving_url
    mlserver = Service("mlserver", server.argv(folder),
                       lambda: server.ready(url, [MODEL], timeout_s=1.0), state / "mlserver.log",
                       env=server.server_env(s), cwd=folder, start_timeout_s=240)
    files = config.write_configs(s, state / "monitoring",
                                 [config.ScrapeJob("mlserver", (f"127.0.0.1:{metrics}",))])
    prometheus = Service("prometheus", config.prometheus_argv(files, prom_port),
                         lambda: http_ok(f"http://127.0.0.1:{prom_port}/-/ready"),
                         state / "prometheus.log", start_timeout_s=60)
    progress("starting MLServer and Prometheus for the canary faults")
    mlserver.start()
    try:
        prometheus.start()
    except BaseException:
        mlserver.stop()
        raise
    service = PromotionService(s, store=store)
    return Canary(s, mlserver, prometheus, service)


class AppTraffic:
    """An app: a digit to MLServer over V2 REST, then its truth to feedback-intake."""

    def __init__(self, canary: Canary, rig: Rig, source: str) -> None:
        from driftloop import client
        from driftloop.demo.traffic import digit_samples

        self.samples = digit_samples(200, rotate=False, seed=7)
        self.client = client.Client(source=source, serving_url=canary.serving_url,
                                    intake_url=intake_url(rig.intake), timeout_s=10.0)
        self.source = source
        self.answered: Counter[str] = Counter()
        self.failed_predictions = 0
        self.predicted_at: list[float] = []
        self.acked: dict[tuple[str, str], float] = {}
        self.sent_after: dict[tuple[str, str], float] = {}
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        self._thread.join(timeout=60)
        with contextlib.suppress(Exception):
            self.client.close()

    def first_prediction_after(self, t: float) -> float | None:
        times = [x for x in self.predicted_at if x >= t]
        return min(times) if times else None

    def _run(self) -> None:
        i = 0
        while not self._halt.is_set():
            pixels, label = self.samples[i % len(self.samples)]
            i += 1
            try:
                pred = self.client.predict(MODEL, [pixels])
            except Exception:
                self.failed_predictions += 1
                self._halt.wait(0.2)
                continue
            self.predicted_at.append(time.time())
            self.answered[str(pred.version)] += 1
            fb = self.client.make_feedback(pred, truth=label)
            while not self._halt.is_set():
                sent = time.time()
                try:
                    self.client.send_feedback(fb)
                except Exception:
                    self._halt.wait(0.2)
                    continue
                key = (self.source, str(fb.id))
                self.acked[key], self.sent_after[key] = time.time(), sent
                break
            self._halt.wait(0.05)


def outcome_of(canary: Canary, version: str, timeout_s: float = 240.0) -> str:
    final = canary.service.wait(MODEL, version, timeout_s=timeout_s)
    if final is None:
        return "no decision"
    champion = canary.service.registry.alias(MODEL, "champion")
    return f"{final.phase} (champion v{champion}): {final.reason[:160]}"


def promotion_reason_json(canary: Canary, version: str) -> str:
    return json.dumps(canary.service.verdicts(MODEL, version)[-1:], default=str)[:400]


def wait_first_verdict(canary: Canary, version: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not canary.service.verdicts(MODEL, version):
        if time.monotonic() > deadline:
            raise TimeoutError("no first canary verdict")
        time.sleep(0.5)

