"""Join: driftloop.predictions ⋈ driftloop.feedback on prediction_id → driftloop.labeled.

Kafka tables → one keyed stream (key = prediction id) → a KeyedProcessFunction that
delegates to the pure state machine in flink.transforms.join, with one processing-time
timer per key closing its phase → a transactional Kafka sink (labeled or dead letter).

No record can stop the job: what cannot be parsed, encoded or fit into a record is
dead-lettered with its reason and origin (topic, partition, offset), and a failure inside
the operator itself parks the record as ``internal`` and the stream goes on.
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
from flink.transforms.deadletter import Origin, Record, dead_letter

if TYPE_CHECKING:
    from pyflink.table import StatementSet, StreamTableEnvironment

log = logging.getLogger(__name__)
SINK = "join_out"
VALID = "k"
"""Keys of parsed records are ``k<prediction id>``; everything unparsable is keyed ``x``:
no user-supplied id can collide with the bucket of invalid records."""
INVALID_KEY = "x"
SIDE_TOPIC = {logic.PREDICTION: topics.PREDICTIONS, logic.FEEDBACK: topics.FEEDBACK}
COUNTERS = ("labeled", "unmatched_feedback", "unmatched_predictions", "duplicate_predictions",
            "duplicate_feedback", "superseded_feedback", "mismatched_feedback", "invalid",
            "too_large", "internal")


def join_config(settings: Settings) -> logic.JoinConfig:
    return logic.JoinConfig(
        window_ms=int(settings.flink_join_window_s * 1000),
        keep_ms=int(settings.flink_join_corrections_s * 1000),
        max_record_bytes=settings.kafka_max_message_bytes,
        max_dead_letter_value_bytes=settings.dead_letter_max_value_bytes,
    )


def parse(side: str, value: bytes | None, headers: dict[str, bytes] | None,
          partition: int | None = None, offset: int | None = None) -> tuple[str, str, str]:
    """(``k`` + join key, side, {event, origin} JSON) — or (``x``, reason, original as JSON)."""
    origin = Origin(SIDE_TOPIC.get(side, topics.FEEDBACK), partition, offset).to_json()
    hdrs = [(k, v or b"") for k, v in (headers or {}).items()]
    try:
        key, record = logic.parse_side(side, events.from_kafka(value, hdrs))
        return VALID + key, side, json.dumps({"event": record, "origin": origin})
    except DriftloopError as e:
        code = logic.INVALID_PREDICTION if side == logic.PREDICTION else logic.INVALID_FEEDBACK
        reason = f"{code}: {e.message}"
    except Exception as e:  # anything else about this record: park it, keep going
        reason = f"{logic.INTERNAL}: parse: {type(e).__name__}: {e}"
    original = {"value": (value or b"").decode("latin-1"),
                "headers": {k: v.decode("latin-1") for k, v in hdrs}, "origin": origin}
    return INVALID_KEY, reason, json.dumps(original)


def invalid_record(reason: str, payload: str, max_value_bytes: int) -> Record:
    original = json.loads(payload)
    h = [(k, v.encode("latin-1")) for k, v in original["headers"].items()]
    return dead_letter(original["value"].encode("latin-1"), h, reason=reason,
                       origin=Origin.from_json(original.get("origin"), topics.FEEDBACK),
                       key=dict(h).get("ce_model"), max_value_bytes=max_value_bytes)


def add_pipeline(t_env: StreamTableEnvironment, stmt: StatementSet, settings: Settings) -> None:
    """Add the join (sources, keyed state machine, sink) to the application."""
    from pyflink.common import Row, Types
    from pyflink.datastream import KeyedProcessFunction, RuntimeContext
    from pyflink.datastream.state import ValueStateDescriptor

    cfg = join_config(settings)
    t_env.execute_sql(kafka_source_ddl("join_predictions", topics.PREDICTIONS, settings, "join"))
    t_env.execute_sql(kafka_source_ddl("join_feedback", topics.FEEDBACK, settings, "join"))
    t_env.execute_sql(kafka_sink_ddl(SINK, [topics.LABELED, topics.DEADLETTER], settings, "join"))
    both = t_env.sql_query(
        "SELECT 'p' AS side, v, headers, part, off FROM join_predictions "
        "UNION ALL SELECT 'f' AS side, v, headers, part, off FROM join_feedback"
    )
    keyed_type = Types.ROW([Types.STRING(), Types.STRING(), Types.STRING()])
    out_type = Types.ROW_NAMED(
        ["k", "v", "headers", "tp"],
        [Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.STRING(),
         Types.MAP(Types.STRING(), Types.PRIMITIVE_ARRAY(Types.BYTE())), Types.STRING()],
    )

    def row(rec: Record) -> Row:
        return Row(rec.key, value_out(rec.value), dict(rec.headers), rec.topic)

    class Join(KeyedProcessFunction):
        def open(self, runtime_context: RuntimeContext) -> None:
            self.state = runtime_context.get_state(
                ValueStateDescriptor("join", Types.STRING()))
            group = runtime_context.get_metrics_group().add_group("driftloop_join")
            self.counters = {name: group.counter(name) for name in COUNTERS}

        def _count(self, name: str | None) -> None:
            self.counters.get(name or "internal", self.counters["internal"]).inc()

        def _emit(self, outputs: list[logic.Output]) -> list[Row]:
            rows = []
            for out in outputs:
                if out.kind == "count":
                    self._count(out.counter)
                    continue
                rec = logic.encode(out, cfg)
                if rec.topic == topics.LABELED:
                    self._count("labeled")
                else:
                    reason = dict(rec.headers).get("dl_reason", b"").decode(errors="replace")
                    self._count(out.counter or reason.split(":", 1)[0])
                rows.append(row(rec))
            return rows

        def process_element(self, value: Row, ctx: KeyedProcessFunction.Context) -> Any:
            key, side, payload = value[0], value[1], value[2]
            if key == INVALID_KEY:
                self._count("invalid")
                yield row(invalid_record(side, payload, cfg.max_dead_letter_value_bytes))
                return
            try:
                parsed = json.loads(payload)
                raw = self.state.value()
                state = logic.restore_state(json.loads(raw)) if raw else logic.empty_state()
                now = ctx.timer_service().current_processing_time()
                state, outputs, timer = logic.on_record(
                    state, side, parsed["event"], now, cfg, parsed.get("origin"))
                rows = self._emit(outputs)
                self.state.update(json.dumps(state))
            except Exception as e:  # a bug must not stop the stream: park the record
                log.exception("join failed on a record")
                self._count("internal")
                parsed = json.loads(payload)
                yield row(logic.encode(logic.Output(
                    "deadletter", raw=json.dumps(parsed["event"]), origin=parsed.get("origin"),
                    reason=f"{logic.INTERNAL}: {type(e).__name__}: {e}"), cfg))
                return
            if timer is not None:
                ctx.timer_service().register_processing_time_timer(timer)
            yield from rows

        def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Any:
            raw = self.state.value()
            if not raw:
                return
            state = logic.restore_state(json.loads(raw))
            if state.get("deadline") is not None and timestamp < state["deadline"]:
                return  # an older phase's timer
            try:
                state, outputs, timer = logic.on_timer(state, timestamp, cfg)
                rows = self._emit(outputs)
            except Exception:  # never let one key's state stop the job: drop it, counted
                log.exception("join timer failed; dropping the key's state")
                self._count("internal")
                self.state.clear()
                return
            if state is None:
                self.state.clear()
            else:
                self.state.update(json.dumps(state))
            if timer is not None:
                ctx.timer_service().register_processing_time_timer(timer)
            yield from rows

    ds = (
        t_env.to_data_stream(both)
        .map(lambda r: Row(*parse(r[0], value_in(r[1]), r[2], r[3], r[4])),
             output_type=keyed_type)
        .name("parse")
        .uid("join-parse")
        .key_by(lambda r: r[0], key_type=Types.STRING())
        .process(Join(), output_type=out_type)
        .name("join")
        .uid("join-state")
    )
    t_env.create_temporary_view("join_results", t_env.from_data_stream(ds))
    stmt.add_insert_sql(f"INSERT INTO `{SINK}` SELECT k, v, headers, tp FROM join_results")
