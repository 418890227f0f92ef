"""bench/capacity.py reads today's manifests and turns bench figures into a plan, so the
plan in docs/capacity.md can be recomputed whenever the code or the manifests change."""

from __future__ import annotations

import json
from pathlib import Path

from bench.capacity import plan, render, scaling_units


def test_scaling_units_are_read_from_the_manifests():
    units = scaling_units()
    assert units["feedback_partitions"] >= 1 and units["kafka_brokers"] >= 1
    assert units["intake_max_scale"] >= 1 and units["flink_preprocess_parallelism"] >= 1
    assert units["drift_check_lag_threshold"] > 0 and units["mlserver_replicas"] >= 1


def test_plan_from_bench_output(tmp_path: Path):
    (tmp_path / "intake.json").write_text(json.dumps({"load_1m": 1.0, "per_core": {
        "intake": {"intake_events_per_core_s": 500, "kafka_events_per_core_s": 1000},
        "batch": {"intake_events_per_core_s": 5000, "kafka_events_per_core_s": 30000}}}))
    (tmp_path / "serving.json").write_text(json.dumps({"load_1m": 1.0, "models": {
        "digits": {"rps_per_core": 250.0}}}))
    units = {**scaling_units(), "intake_max_scale": 10, "mlserver_replicas": 2,
             "kafka_brokers": 3, "kafka_broker_cpu": 1.0}
    rows = {r.component: r for r in plan(tmp_path, 100_000, 10_000, units)}
    batched = rows["feedback-intake (batches of 100)"]
    assert batched.cores == 20 and batched.saturates_at == 0.5  # 10 pods of 20 needed
    kafka = rows["Kafka brokers (acks=all, RF 3)"]
    assert kafka.cores == 3 * 220_000 / 30_000 and kafka.units.startswith("6 brokers")
    assert rows["MLServer digits"].cores == 40
    missing = rows["Flink preprocess"]  # no bench output: said so, never guessed
    assert missing.units == "not measured" and missing.cores is None
    assert "| MLServer digits |" in render(list(rows.values()), markdown=True)


def test_event_routing_is_sized_by_the_dispatcher_bench(tmp_path: Path):
    units = {**scaling_units(), "kafka_sources": [
        {"name": "drift-check", "topics": ["driftloop.labeled", "driftloop.predictions"],
         "max_scale": 3, "partitions": 12},
        {"name": "events", "topics": ["driftloop.events"], "max_scale": 1, "partitions": 3}]}
    rows = {r.component: r for r in plan(tmp_path, 100_000, 10_000, units)}
    missing = rows["event routing: KafkaSource drift-check"]
    assert missing.units == "not measured" and missing.cores is None
    assert "event routing: KafkaSource events" not in rows  # control plane: no data rate
    (tmp_path / "dispatcher.json").write_text(json.dumps({"load_1m": 1.0, "per_core": {
        "dispatcher_events_per_core_s": 2_000, "baseline_events_per_core_s": 4_000}}))
    rows = {r.component: r for r in plan(tmp_path, 100_000, 10_000, units)}
    routed = rows["event routing: KafkaSource drift-check"]
    assert routed.cores == 110_000 / 2_000 and routed.units.startswith("55 consumer replicas")
    assert routed.saturates_at == 3 * 2_000 / 110_000  # max-scale 3 of 12 partitions


def test_kafka_sources_are_read_from_the_eventing_manifests():
    sources = {s["name"]: s for s in scaling_units()["kafka_sources"]}
    assert "driftloop.labeled" in sources["drift-check"]["topics"]
    assert sources["drift-check"]["max_scale"] >= 1 and sources["drift-check"]["partitions"] >= 1
