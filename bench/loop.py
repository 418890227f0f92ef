"""Loop latency: seconds from the triggering event to the new version serving all traffic.

Starts the real parts on free loopback ports (Kafka in KRaft mode, MLServer with the
digits model, Prometheus/Pushgateway/Alertmanager when installed; the blob store in a
temporary folder), then runs ``driftloop.retrain.demo.run_loop``: healthy traffic,
injected drift (rotated digits), drift-check's drift.detected event → retrain-trigger →
a training subprocess → model.trained → promote (offline gate, canary, bake with live
traffic) → champion alias moved and the champion endpoint answering with the new version.

The baseline, measured in the same run, is the training pipeline alone (in-process, the
same data): the loop's figure is printed as a ratio of it. Medians over ``--runs``.

    .venv/bin/python bench/loop.py [--runs 1] [--bake-s 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from driftloop.local.components.kafka import create_topics  # noqa: E402
from driftloop.local.kafka import KafkaBroker  # noqa: E402
from driftloop.local.process import free_port, spawn, stop_pid, wait_until  # noqa: E402
from driftloop.settings import Settings  # noqa: E402


def start_monitoring(folder: Path, settings: Settings) -> tuple[list[int], Settings]:
    """Prometheus, Pushgateway, Alertmanager when installed (else none: the loop runs
    on labeled records alone)."""
    from driftloop.local.components.monitoring import http_ready
    from driftloop.monitoring import config

    if not all(config.binary(b) for b in (config.PROMETHEUS_BIN, config.PUSHGATEWAY_BIN,
                                          config.ALERTMANAGER_BIN)):
        return [], settings
    settings = settings.model_copy(update={
        "prometheus_port": free_port(), "pushgateway_port": free_port(),
        "alertmanager_port": free_port(), "scrape_interval_s": 1.0,
        "alert_webhook_url": "http://127.0.0.1:9/"})
    files = config.write_configs(settings, folder / "monitoring")
    pids = []
    for name, argv, url in (
        ("pushgateway", config.pushgateway_argv(files, settings.pushgateway_port),
         settings.resolved_pushgateway_url),
        ("prometheus", config.prometheus_argv(files, settings.prometheus_port),
         settings.resolved_prometheus_url),
    ):
        log = folder / "logs" / f"{name}.log"
        proc = spawn(argv, log_path=log)
        pids.append(proc.pid)
        wait_until(lambda u=url: http_ready(f"{u}/-/ready"), timeout_s=60, what=name,
                   alive=lambda p=proc: p.poll() is None, log_path=log)
    return pids, settings


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--bake-s", type=float, default=10.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from driftloop.policy import load_policy
    from driftloop.retrain.demo import run_loop
    from driftloop.retrain.pipeline import train_model
    from driftloop.serving.server import MLServerProcess

    work = Path(tempfile.mkdtemp(prefix="driftloop-bench-loop-"))
    policy = yaml.safe_load((ROOT / "policies" / "digits.yaml").read_text())
    policy["promotion"].update({"bake_s": args.bake_s, "poll_s": 1.0})
    (work / "policies").mkdir()
    (work / "policies" / "digits.yaml").write_text(yaml.safe_dump(policy))

    broker = KafkaBroker(libs_dir=Settings().cache_dir / "kafka" / "libs",
                         data_dir=work / "kafka", port=free_port(),
                         controller_port=free_port(), heap="512m")
    pids: list[int] = []
    server = None
    try:
        broker.format_storage()
        kproc = spawn(broker.argv(), log_path=work / "kafka.log")
        pids.append(kproc.pid)
        wait_until(broker.healthy, timeout_s=90, what="kafka",
                   alive=lambda: kproc.poll() is None, log_path=work / "kafka.log")
        settings = Settings(
            state_dir=work / "state", kafka_bootstrap=broker.bootstrap,
            blob_url=(work / "blobs").as_uri(), policy_dir=work / "policies",
            serving_models="digits", serving_http_port=free_port(),
            serving_grpc_port=free_port(), serving_metrics_port=free_port(),
            prometheus_url=f"http://127.0.0.1:{free_port()}",
            pushgateway_url=f"http://127.0.0.1:{free_port()}", drift_min_records=30)
        create_topics(settings)
        mon_pids, settings = start_monitoring(work, settings.model_copy(
            update={"prometheus_url": "", "pushgateway_url": ""}))
        pids += mon_pids
        if not mon_pids:
            settings = settings.model_copy(update={
                "prometheus_url": f"http://127.0.0.1:{free_port()}",
                "pushgateway_url": f"http://127.0.0.1:{free_port()}"})
        from driftloop.blob import open_store
        from driftloop.registry import Registry
        from driftloop.serving.bootstrap import ensure_models

        ensure_models(Registry(open_store(settings.resolved_blob_url, settings)), ["digits"])
        server = MLServerProcess(settings, work / "server", work / "mlserver.log").start()
        settings = settings.model_copy(update={"serving_url": server.url})

        loops, baselines, reports = [], [], []
        for i in range(args.runs):
            report = run_loop(settings, progress=lambda m: print(f"  {m}", file=sys.stderr))
            if report.phase != "promoted":
                print(f"run {i}: {report.phase}: {report.reason}", file=sys.stderr)
                return 1
            loops.append(report.timings["trigger_to_serving_s"])
            reports.append(report.to_dict())
            t = time.perf_counter()
            train_model(settings, load_policy(settings.policy_dir, "digits"),
                        run_id=f"baseline-{i}", emit=False)
            baselines.append(time.perf_counter() - t)
            # The next run must not be held back by the cooldown of this one.
            for key in list(open_store(settings.resolved_blob_url, settings).list("runs/")):
                open_store(settings.resolved_blob_url, settings).delete(key)
        loop_s, base_s = statistics.median(loops), statistics.median(baselines)
        out = {"loop_s_median": round(loop_s, 2), "training_alone_s_median": round(base_s, 2),
               "ratio": round(loop_s / base_s, 2), "bake_s": args.bake_s, "runs": args.runs,
               "monitoring": bool(mon_pids), "reports": reports}
        if args.json:
            print(json.dumps(out, indent=1))
        else:
            r = reports[-1]
            print(f"trigger → new version serving all traffic: {loop_s:.1f} s (median of "
                  f"{args.runs}; bake period {args.bake_s:.0f} s)")
            print(f"baseline, the training pipeline alone: {base_s:.1f} s → loop/baseline "
                  f"= {loop_s / base_s:.1f}x")
            print(f"breakdown: {json.dumps({k: round(v, 1) for k, v in r['timings'].items()})}")
            print(f"accuracy: {json.dumps({k: round(v, 3) for k, v in r['quality'].items()})};"
                  f" canary split {r['canary_split']}")
        return 0
    finally:
        if server is not None:
            server.stop()
        for pid in reversed(pids):
            stop_pid(pid)


if __name__ == "__main__":
    sys.exit(main())
