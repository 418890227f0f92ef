"""Join: driftloop.predictions ⋈ driftloop.feedback on prediction_id → driftloop.labeled.

Kafka tables → one keyed stream (key = prediction id) → a KeyedProcessFunction that
delegates to the pure state machine in flink.transforms.join, with one processing-time
timer per key closing its window → a transactional Kafka sink (labeled or dead letter).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from driftloop import events, topics
from driftloop.errors import DriftloopError
from driftloop.settings import Settings
from flink.jobs.common import kafka_sink_ddl, kafka_source_ddl, value_in, value_out
from flink.transforms import join as logic

if TYPE_CHECKING:
    from pyflink.table import StatementSet, StreamTableEnvironment

log = logging.getLogger(__name__)
SINK = "join_out"
INVALID = "\x00invalid"


def parse(side: str, value: bytes | None, headers: dict[str, bytes] | None) -> tuple[str, str, str]:
    """(join key, side, structured JSON) — or (INVALID, reason, original record as JSON)."""
    hdrs = [(k, v or b"") for k, v in (headers or {}).items()]
    try:
        key, record = logic.parse_side(side, events.from_kafka(value, hdrs))
        return key, side, json.dumps(record)
    except DriftloopError as e:
        original = {"value": (value or b"").decode("latin-1"),
                    "headers": {k: v.decode("latin-1") for k, v in hdrs}}
        return INVALID, f"invalid_{'prediction' if side == 'p' else 'feedback'}: {e.message}", \
            json.dumps(original)


def to_row(out: logic.Output) -> tuple[bytes | None, str | None, dict[str, bytes], str]:
    if out.kind == "labeled" and out.event is not None:
        rec = events.to_kafka(out.event, key=out.event.extensions.get("model"))
        return rec.key, value_out(rec.value), dict(rec.headers), topics.LABELED
    fb = json.loads(out.raw or "{}")
    data = fb.get("data") if isinstance(fb.get("data"), dict) else {}
    rec = events.to_kafka(events.from_structured(fb), key=data.get("model"))
    h = dict(rec.headers)
    h["dl_reason"] = (out.reason or "unmatched").encode()[:4096]
    h["dl_source_topic"] = topics.FEEDBACK.encode()
    return rec.key, value_out(rec.value), h, topics.DEADLETTER


def add_pipeline(t_env: StreamTableEnvironment, stmt: StatementSet, settings: Settings) -> None:
    """Add the join (sources, keyed state machine, sink) to the application."""
    from pyflink.common import Row, Types
    from pyflink.datastream import KeyedProcessFunction, RuntimeContext
    from pyflink.datastream.state import ValueStateDescriptor

    window_ms = int(settings.flink_join_window_s * 1000)
    t_env.execute_sql(kafka_source_ddl("join_predictions", topics.PREDICTIONS, settings, "join"))
    t_env.execute_sql(kafka_source_ddl("join_feedback", topics.FEEDBACK, settings, "join"))
    t_env.execute_sql(kafka_sink_ddl(SINK, [topics.LABELED, topics.DEADLETTER], settings, "join"))
    both = t_env.sql_query(
        "SELECT 'p' AS side, v, headers FROM join_predictions "
        "UNION ALL SELECT 'f' AS side, v, headers FROM join_feedback"
    )
    keyed_type = Types.ROW([Types.STRING(), Types.STRING(), Types.STRING()])
    out_type = Types.ROW_NAMED(
        ["k", "v", "headers", "tp"],
        [Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.STRING(),
         Types.MAP(Types.STRING(), Types.PRIMITIVE_ARRAY(Types.BYTE())), Types.STRING()],
    )

    class Join(KeyedProcessFunction):
        def open(self, runtime_context: RuntimeContext) -> None:
            self.state = runtime_context.get_state(
                ValueStateDescriptor("join", Types.STRING()))
            group = runtime_context.get_metrics_group().add_group("driftloop_join")
            self.counters = {name: group.counter(name) for name in (
                "labeled", "unmatched_feedback", "unmatched_predictions",
                "duplicate_predictions", "duplicate_feedback", "invalid")}

        def process_element(self, value: Row, ctx: KeyedProcessFunction.Context) -> Any:
            key, side, payload = value[0], value[1], value[2]
            if key == INVALID:
                self.counters["invalid"].inc()
                original = json.loads(payload)
                h = {k: v.encode("latin-1") for k, v in original["headers"].items()}
                h["dl_reason"] = side.encode()[:4096]
                h["dl_source_topic"] = (topics.PREDICTIONS if "prediction" in side
                                        else topics.FEEDBACK).encode()
                yield Row(None, original["value"], h, topics.DEADLETTER)
                return
            raw = self.state.value()
            state = json.loads(raw) if raw else logic.empty_state()
            now = ctx.timer_service().current_processing_time()
            state, outputs, timer = logic.on_record(state, side, json.loads(payload), now,
                                                    window_ms)
            self.state.update(json.dumps(state))
            if timer is not None:
                ctx.timer_service().register_processing_time_timer(timer)
            for out in outputs:
                if out.kind == "count":
                    self.counters[out.counter or "invalid"].inc()
                else:
                    self.counters["labeled"].inc()
                    yield Row(*to_row(out))

        def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Any:
            raw = self.state.value()
            if not raw:
                return
            state = json.loads(raw)
            self.state.clear()
            for out in logic.on_timer(state, window_ms):
                if out.kind == "count":
                    self.counters[out.counter or "invalid"].inc()
                else:
                    self.counters["unmatched_feedback"].inc()
                    yield Row(*to_row(out))

    ds = (
        t_env.to_data_stream(both)
        .map(lambda r: Row(*parse(r[0], value_in(r[1]), r[2])), output_type=keyed_type)
        .name("parse")
        .uid("join-parse")
        .key_by(lambda r: r[0], key_type=Types.STRING())
        .process(Join(), output_type=out_type)
        .name("join")
        .uid("join-state")
    )
    t_env.create_temporary_view("join_results", t_env.from_data_stream(ds))
    stmt.add_insert_sql(f"INSERT INTO `{SINK}` SELECT k, v, headers, tp FROM join_results")
