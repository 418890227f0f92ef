"""Archive: predictions, feedback and labeled → the blob store, exactly once.

Kafka table → Python table function (line, model, date) → de-duplication by identity
((source, id); a labeled record's: its feedback's (source, id)) → Flink's file-system sink
partitioned as ``<kind>/model=<m>/date=<YYYY-MM-DD>/part-…``.
The sink writes in-progress files (hidden, ``.part-…``) and commits them only with a
checkpoint, while the Kafka offsets live in the same checkpoint: a killed job restarts
from it with nothing lost and nothing doubled, on file:// and s3:// alike.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from driftloop import topics
from driftloop.settings import Settings
from flink.jobs.common import flink_path, kafka_source_ddl, value_in, with_clause
from flink.transforms.archive import archive_line, invalid_line

if TYPE_CHECKING:
    from pyflink.table import StatementSet, StreamTableEnvironment

KINDS: dict[str, str] = {
    "predictions": topics.PREDICTIONS,
    "feedback": topics.FEEDBACK,
    "labeled": topics.LABELED,
}


def make_udtf() -> Any:
    from pyflink.table import DataTypes
    from pyflink.table.udf import udtf

    @udtf(result_types=[DataTypes.STRING()] * 4)
    def dl_archive_line(
        value: str | None, headers: Mapping[str, bytes] | None, ts: Any
    ) -> Iterator[tuple[str, str, str, str]]:
        ms = int(ts.timestamp() * 1000) if ts is not None else 0
        try:
            a = archive_line(value_in(value), headers, ms)
        except Exception as e:  # a bug must not stop the stream: keep the record as invalid
            a = invalid_line(value_in(value), ms, f"internal: {type(e).__name__}: {e}")
        yield a.line, a.model, a.date, a.dedup_key

    return dl_archive_line


def sink_ddl(name: str, url: str, settings: Settings) -> str:
    roll = f"{int(settings.flink_archive_roll_s * 1000)} ms"
    options = {
        "connector": "filesystem",
        "path": flink_path(url),
        "format": "raw",
        "raw.charset": "UTF-8",
        "sink.rolling-policy.rollover-interval": roll,
        "sink.rolling-policy.inactivity-interval": roll,
        "sink.rolling-policy.check-interval": "1 s",
    }
    return (
        f"CREATE TEMPORARY TABLE `{name}` (line STRING, model STRING, `date` STRING) "
        "PARTITIONED BY (model, `date`) " + with_clause(options)
    )


def add_pipeline(t_env: StreamTableEnvironment, stmt: StatementSet, settings: Settings) -> None:
    """One source, de-duplication and partitioned file sink per archived kind."""
    t_env.create_temporary_function("dl_archive_line", make_udtf())
    base = settings.resolved_blob_url.rstrip("/")
    for kind, topic in KINDS.items():
        src, dst = f"archive_src_{kind}", f"archive_{kind}"
        t_env.execute_sql(kafka_source_ddl(src, topic, settings, "archive"))
        t_env.execute_sql(sink_ddl(dst, f"{base}/{kind}", settings))
        stmt.add_insert_sql(
            f"INSERT INTO `{dst}` SELECT line, model, `date` FROM ("
            "  SELECT a.line, a.model, a.`date`,"
            "    ROW_NUMBER() OVER (PARTITION BY a.dkey ORDER BY pt ASC) AS rn"
            f"  FROM `{src}`, LATERAL TABLE(dl_archive_line(v, headers, ts))"
            "    AS a(line, model, `date`, dkey)"
            ") WHERE rn = 1"
        )
