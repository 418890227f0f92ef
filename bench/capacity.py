"""The capacity plan, recomputed from the bench output: the cluster needed for a feedback
rate and an inference rate, and the first bottleneck at today's manifests.

Inputs are the JSON files the benches write with ``--out-json`` (``make bench`` puts them
in ``.driftloop/bench``): intake.json, serving.json, flink_preprocess.json, drift.json,
dispatcher.json.
The scaling units are read from the manifests (Kafka partitions, Knative max scale and CPU
request of feedback-intake, Flink parallelism, KEDA/Knative lag thresholds and max scale of
the Kafka sources, MLServer workers), so the plan moves with the code and the
configuration. A missing bench is shown as "not measured", never guessed.
    .venv/bin/python bench/capacity.py [--dir .driftloop/bench] [--feedback 100000]
        [--inferences 10000] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
BROKER_CORES = 4
"""Planning size of one Kafka broker (cores); the replication factor is 3."""
REPLICATION = 3


@dataclass(frozen=True)
class Row:
    component: str
    load: str
    per_core: float | None
    cores: float | None
    units: str
    configured: str
    saturates_at: float | None
    """Fraction of the target this component carries at its configured maximum."""


def load_bench(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _cores(cpu: str) -> float:
    return float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)


def scaling_units(root: Path = ROOT) -> dict[str, Any]:
    """The knobs the plan scales, as the manifests set them today."""
    def doc(rel: str) -> dict[str, Any]:
        return yaml.safe_load((root / rel).read_text())

    func = doc("functions/feedback-intake/func.yaml")
    scale = func["deploy"]["options"]["scale"]
    cpu = str(func["deploy"]["options"]["resources"]["requests"]["cpu"])
    flink = doc("infra/k8s/base/62-flinkdeployment-preprocess.yaml")
    server = (root / "seldon/k8s/core/server.yaml").read_text()
    workers = yaml.safe_load(server)
    env = {e["name"]: e.get("value") for c in
           workers["spec"]["podSpec"]["containers"] for e in c.get("env", [])} \
        if "podSpec" in workers.get("spec", {}) else {}
    source = doc("eventing/31-kafkasource-drift-check.yaml")["metadata"]["annotations"]
    pool = doc("infra/k8s/base/10-kafkanodepool-dual-role.yaml")["spec"]
    broker_cpu = str(pool["resources"]["requests"]["cpu"])
    partitions = {d["spec"]["topicName"]: int(d["spec"]["partitions"])
                  for f in sorted((root / "infra/k8s/base").glob("*-kafkatopic-*.yaml"))
                  if (d := yaml.safe_load(f.read_text()))}
    sources = [
        {"name": d["metadata"]["name"], "topics": list(d["spec"]["topics"]),
         "max_scale": int((d["metadata"].get("annotations") or {})
                          .get("autoscaling.eventing.knative.dev/max-scale", 1)),
         "partitions": sum(partitions.get(t, 1) for t in d["spec"]["topics"])}
        for f in sorted((root / "eventing").glob("*-kafkasource-*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
        if d and d.get("kind") == "KafkaSource"
    ]
    return {
        "kafka_sources": sources,
        "feedback_partitions": doc("infra/k8s/base/25-kafkatopic-feedback.yaml")["spec"]
        ["partitions"],
        "predictions_partitions": doc("infra/k8s/base/24-kafkatopic-predictions.yaml")["spec"]
        ["partitions"],
        "raw_audio_partitions": doc("infra/k8s/base/20-kafkatopic-raw-audio.yaml")["spec"]
        ["partitions"],
        "kafka_brokers": int(pool["replicas"]),
        "kafka_broker_cpu": _cores(broker_cpu),
        "intake_max_scale": int(scale["max"]),
        "intake_concurrency_target": int(scale["target"]),
        "intake_cpu_request": _cores(cpu),
        "flink_preprocess_parallelism": int(flink["spec"]["job"]["parallelism"]),
        "mlserver_parallel_workers": env.get("MLSERVER_PARALLEL_WORKERS", "0"),
        "mlserver_replicas": int(workers["spec"].get("replicas", 1)),
        "drift_check_max_scale": int(source["autoscaling.eventing.knative.dev/max-scale"]),
        "drift_check_lag_threshold": int(source["autoscaling.eventing.knative.dev/lag-threshold"]),
    }


def plan(folder: Path, feedback: float, inferences: float,
         units: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    intake = load_bench(folder, "intake")
    if intake:
        for kind, label in (("intake", "single events"), ("batch", "batches of 100")):
            per = intake["per_core"][kind]["intake_events_per_core_s"]
            cores = feedback / per
            pods = math.ceil(cores)  # one gunicorn process is busy on about one core
            rows.append(Row(f"feedback-intake ({label})", f"{feedback:,.0f} events/s", per, cores,
                            f"{pods} pods of 1 core", f"max {units['intake_max_scale']} pods",
                            units["intake_max_scale"] / max(pods, 1)))
        per_k = intake["per_core"]["batch"]["kafka_events_per_core_s"]
        per_k1 = intake["per_core"]["intake"]["kafka_events_per_core_s"]
        # feedback + labeled (one per joined feedback) + predictions + preprocessed inputs;
        # measured on one broker without replication: RF 3 writes each record three times.
        records = 2 * feedback + 2 * inferences
        cores = REPLICATION * records / per_k
        brokers = max(REPLICATION, math.ceil(cores / BROKER_CORES))
        today = units["kafka_brokers"] * units["kafka_broker_cpu"]
        rows.append(Row("Kafka brokers (acks=all, RF 3)", f"{records:,.0f} records/s written",
                        per_k, cores, f"{brokers} brokers of {BROKER_CORES} cores",
                        f"{units['kafka_brokers']} brokers x {units['kafka_broker_cpu']:g} "
                        f"core; feedback {units['feedback_partitions']} partitions",
                        today / cores))
        rows.append(Row("(Kafka if producers do not batch)", f"{records:,.0f} records/s",
                        per_k1, REPLICATION * records / per_k1, "why apps should batch", "-",
                        None))
    else:
        rows.append(Row("feedback-intake", f"{feedback:,.0f} events/s", None, None,
                        "not measured", "-", None))
    serving = load_bench(folder, "serving")
    if serving is None:
        rows.append(Row("MLServer", f"{inferences:,.0f} req/s", None, None, "not measured",
                        "-", None))
    for model, fig in (serving or {}).get("models", {}).items():
        per = fig["rps_per_core"]
        cores = inferences / per
        rows.append(Row(f"MLServer {model}", f"{inferences:,.0f} req/s", per, cores,
                        f"{math.ceil(cores)} pods of 1 core (parallel_workers "
                        f"{units['mlserver_parallel_workers']})",
                        f"Server replicas {units['mlserver_replicas']}",
                        units["mlserver_replicas"] * per / inferences))
    flink = load_bench(folder, "flink_preprocess")
    if flink:
        per = flink["clips_per_core_s"]
        cores = inferences / per
        par = units["flink_preprocess_parallelism"]
        rows.append(Row("Flink preprocess (audio, 2 s clips)", f"{inferences:,.0f} clips/s", per,
                        cores, f"parallelism {math.ceil(cores)}; raw.audio partitions >= it",
                        f"parallelism {par}, {units['raw_audio_partitions']} partitions",
                        units["raw_audio_partitions"] * per / inferences))
    else:
        rows.append(Row("Flink preprocess", f"{inferences:,.0f} clips/s", None, None,
                        "not measured", "-", None))
    drift = load_bench(folder, "drift")
    if drift is None:
        rows.append(Row("drift-check", f"{inferences:,.0f} rows/s", None, None,
                        "not measured", "-", None))
    else:
        per = drift["rows_per_core_s"] * drift["features"] / 20
        cores = inferences / per
        rows.append(Row("drift-check (20 features)", f"{inferences:,.0f} rows/s", per, cores,
                        f"{max(1, math.ceil(cores))} replica(s)",
                        f"max {units['drift_check_max_scale']}, lag threshold "
                        f"{units['drift_check_lag_threshold']}",
                        units["drift_check_max_scale"] / max(cores, 1e-9)))
    rows += routing(folder, feedback, inferences, units)
    return rows


def routing(folder: Path, feedback: float, inferences: float,
            units: dict[str, Any]) -> list[Row]:
    """Knative Eventing's Kafka sources: each delivers every record of its topics to its
    function. Sized by the local dispatcher's events per core-second (bench/dispatcher.py),
    a pessimistic stand-in for eventing-kafka-broker's dispatcher (Java, batched)."""
    rates = {"driftloop.feedback": feedback, "driftloop.labeled": feedback,
             "driftloop.predictions": inferences}
    """Records/s per topic: one labeled record per joined feedback event; control-plane
    topics (driftloop.events) carry a handful per hour and are left out."""
    bench = load_bench(folder, "dispatcher")
    rows = []
    for src in units["kafka_sources"]:
        load = sum(rates.get(t, 0.0) for t in src["topics"])
        if not load:
            continue
        name = f"event routing: KafkaSource {src['name']}"
        topics = "+".join(t.removeprefix("driftloop.") for t in src["topics"])
        if bench is None:
            rows.append(Row(name, f"{load:,.0f} events/s ({topics})", None, None,
                            "not measured", "-", None))
            continue
        per = bench["per_core"]["dispatcher_events_per_core_s"]
        cores = load / per
        replicas = math.ceil(cores)
        rows.append(Row(name, f"{load:,.0f} events/s ({topics})", per, cores,
                        f"{replicas} consumer replicas of 1 core; partitions >= {replicas}",
                        f"max-scale {src['max_scale']}, {src['partitions']} partitions",
                        min(src["max_scale"], src["partitions"]) * per / load))
    return rows


def render(rows: list[Row], markdown: bool) -> str:
    head = ("component", "load", "per core-s", "cores", "units needed", "configured today",
            "today carries")
    lines = []
    for r in rows:
        per = "-" if r.per_core is None else (f"{r.per_core:,.0f}" if r.per_core >= 100
                                              else f"{r.per_core:.3g}")
        lines.append((r.component, r.load, per,
                      "-" if r.cores is None else f"{r.cores:,.1f}", r.units, r.configured,
                      "-" if r.saturates_at is None else f"{min(r.saturates_at, 99):.1%}"))
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(cells) + " |" for cells in lines]
        return "\n".join(out)
    widths = [max(len(x) for x in col) for col in zip(head, *lines, strict=True)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
                     for cells in [head, *lines])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=ROOT / ".driftloop" / "bench")
    ap.add_argument("--feedback", type=float, default=100_000)
    ap.add_argument("--inferences", type=float, default=10_000)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    units = scaling_units()
    rows = plan(args.dir, args.feedback, args.inferences, units)
    print(render(rows, args.markdown))
    plan_rows = [r for r in rows if not r.component.startswith("(")
                 and "single events" not in r.component]
    base = sum(r.cores for r in plan_rows if r.cores and not r.component.startswith("MLServer"))
    serving = {r.component.removeprefix("MLServer "): r.cores for r in plan_rows
               if r.component.startswith("MLServer") and r.cores}
    limited = [r for r in plan_rows if r.saturates_at is not None]
    print(f"\ncores outside model serving (intake batched, streaming preprocess for every "
          f"inference): {base:,.0f}")
    if serving:
        print("plus model serving, if all inferences go to one family: "
              + ", ".join(f"{m} {c:,.0f}" for m, c in serving.items()))
    for what, pool in (("", limited),
                       (" outside model compute",
                        [r for r in limited if not r.component.startswith("MLServer")])):
        if pool:
            first = min(pool, key=lambda r: r.saturates_at or 0)
            print(f"first bottleneck{what} at today's limits: {first.component} "
                  f"({first.configured}) carries {first.saturates_at:.1%} of the target")
    loads = [b["load_1m"] for n in ("intake", "serving", "flink_preprocess", "drift",
                                     "dispatcher")
             if (b := load_bench(args.dir, n))]
    if loads:
        print(f"machine load (1 min) during the benches: {', '.join(f'{x:.1f}' for x in loads)}")


if __name__ == "__main__":
    main()
