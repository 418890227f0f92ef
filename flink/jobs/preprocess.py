"""Preprocess, stream mode: driftloop.raw.<modality> → driftloop.preprocessed.<modality>.

Kafka source table → Python table function (the pure transforms in flink.transforms) →
one transactional Kafka sink that writes each row to its preprocessed topic or to the
dead-letter topic, so a rejected input costs no second pass.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from driftloop import topics
from driftloop.settings import Settings
from flink.jobs.common import kafka_sink_ddl, kafka_source_ddl, value_in, value_out
from flink.transforms.audio import AudioConfig
from flink.transforms.dataref import BlobRefs, BlobWrites
from flink.transforms.deadletter import Origin, dead_letter
from flink.transforms.image import ImageConfig
from flink.transforms.records import PreprocessConfig, process_kafka_record

if TYPE_CHECKING:
    from pyflink.table import StatementSet, StreamTableEnvironment

log = logging.getLogger(__name__)
SINK = "preprocess_out"


def preprocess_config(settings: Settings) -> PreprocessConfig:
    """The transform parameters from settings (shared by stream, batch and the bench)."""
    return PreprocessConfig(
        audio=AudioConfig(
            target_rms_dbfs=settings.flink_audio_target_dbfs,
            peak_limit_dbfs=settings.flink_audio_peak_dbfs,
            max_duration_s=settings.flink_audio_max_duration_s,
            max_bytes=settings.flink_max_input_bytes,
        ),
        image=ImageConfig(
            width=settings.flink_image_width,
            height=settings.flink_image_height,
            mode=settings.flink_image_mode,
            max_bytes=settings.flink_max_input_bytes,
        ),
        inline_max_bytes=settings.flink_inline_max_bytes,
        max_record_bytes=settings.kafka_max_message_bytes,
        max_dead_letter_value_bytes=settings.dead_letter_max_value_bytes,
    )


def blob_writes(settings: Settings) -> BlobWrites:
    """Puts payloads too large to inline into the configured blob store (opened on first
    use, once per worker): the output side of the claim check."""
    from driftloop.blob import open_store

    return BlobWrites(lambda: open_store(settings.resolved_blob_url, settings))


def blob_refs(settings: Settings, cfg: PreprocessConfig) -> BlobRefs:
    """Follows inputs' ``dataref`` into the configured blob store (opened on first use)."""
    from driftloop.blob import open_store

    return BlobRefs(lambda: open_store(settings.resolved_blob_url, settings),
                    max_bytes=cfg.audio.max_bytes)


def make_udtf(settings: Settings) -> Any:
    """The table function: (modality, value, headers) → one (key, value, headers, topic) row."""
    from pyflink.table import DataTypes
    from pyflink.table.udf import TableFunction, udtf

    settings_json = settings.reveal(mode="json")

    class Preprocess(TableFunction):
        def open(self, function_context: Any) -> None:
            self.settings = Settings.model_validate(settings_json)
            self.cfg = preprocess_config(self.settings)
            self.offload = blob_writes(self.settings)
            self.refs = blob_refs(self.settings, self.cfg)

        def eval(
            self, modality: str, text: str | None, headers: Mapping[str, bytes] | None,
            partition: int | None = None, offset: int | None = None,
        ) -> Iterator[tuple[bytes | None, str | None, dict[str, bytes], str]]:
            source = topics.raw(modality)
            value = value_in(text)
            try:
                out = process_kafka_record(
                    value, headers, modality=modality, source_topic=source,
                    output_topic=topics.preprocessed(modality),
                    deadletter_topic=topics.DEADLETTER, cfg=self.cfg, offload=self.offload,
                    partition=partition, offset=offset, resolve=self.refs)
            except Exception as e:  # a bug must not stop the stream: park the record
                log.exception("preprocess failed on a %s record", modality)
                dl = dead_letter(value, headers, reason=f"internal: {type(e).__name__}: {e}",
                                 origin=Origin(source, partition, offset),
                                 max_value_bytes=self.cfg.max_dead_letter_value_bytes)
                yield dl.key, value_out(dl.value), dict(dl.headers), dl.topic
                return
            yield out.key, value_out(out.value), dict(out.headers), out.topic

    return udtf(
        Preprocess(),
        result_types=[DataTypes.BYTES(), DataTypes.STRING(),
                      DataTypes.MAP(DataTypes.STRING(), DataTypes.BYTES()), DataTypes.STRING()],
    )


def add_pipeline(
    t_env: StreamTableEnvironment, stmt: StatementSet, settings: Settings,
    modalities: tuple[str, ...] = topics.MODALITIES,
) -> None:
    """Add the preprocess inserts (one per modality) to a statement set."""
    t_env.create_temporary_function("dl_preprocess", make_udtf(settings))
    out_topics = [*(topics.preprocessed(m) for m in modalities), topics.DEADLETTER]
    t_env.execute_sql(kafka_sink_ddl(SINK, out_topics, settings, "preprocess"))
    for m in modalities:
        src = f"raw_{m}"
        t_env.execute_sql(kafka_source_ddl(src, topics.raw(m), settings, "preprocess"))
        stmt.add_insert_sql(
            f"INSERT INTO `{SINK}` SELECT r.k2, r.v2, r.h2, r.tp FROM `{src}`, "
            f"LATERAL TABLE(dl_preprocess('{m}', v, headers, part, off)) AS r(k2, v2, h2, tp)"
        )
