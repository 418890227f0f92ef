"""Typed settings from the environment (prefix ``DRIFTLOOP_``).

One object, built once at the edge (CLI, function entry point, job ``main``) and
passed down; library code never reads ``os.environ`` itself.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator

PROJECT_ROOT = Path(__file__).resolve().parent.parent
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything driftloop can be told from outside. Each field maps to ``DRIFTLOOP_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_", extra="ignore")

    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, comma separated."
    )
    kafka_client_id: str = Field("driftloop", description="Client id prefix for Kafka clients.")
    state_dir: Path = Field(
        Path(".driftloop"),
        description="Where the local stack keeps data, logs and pids.",
    )
    cache_dir: Path = Field(
        PROJECT_ROOT / ".cache",
        description="Where make setup put jars, tools and schemas (resolved from the registries).",
    )
    blob_url: str = Field(
        "",
        description="Blob store URL: file:///path or s3://bucket/prefix. "
        "Empty means <state_dir>/blobs.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (for non-AWS servers)."
    )
    s3_access_key_id: str | None = Field(None, description="S3 access key id.")
    s3_secret_access_key: str | None = Field(
        None, description="S3 secret key.", repr=False
    )
    s3_region: str = Field("us-east-1", description="S3 region name.")
    intake_tokens: str = Field(
        "",
        description="Comma-separated bearer tokens accepted by feedback-intake; empty disables auth.",
        repr=False,
    )
    intake_max_body_bytes: int = Field(
        1024 * 1024, gt=0, description="Largest request body feedback-intake accepts."
    )
    intake_send_timeout_s: float = Field(
        10.0, gt=0, description="How long intake waits for Kafka's acknowledgement before 503."
    )
    intake_retry_after_s: int = Field(
        5, ge=1, description="Retry-After seconds sent with 503 when Kafka is unavailable."
    )
    intake_port: int = Field(8080, description="Port of feedback-intake in the local stack.")
    kafka_port: int = Field(9092, description="Broker port of the local Kafka.")
    kafka_controller_port: int = Field(9093, description="Controller port of the local Kafka.")
    kafka_heap: str = Field("768m", description="JVM heap of the local Kafka broker.")
    topic_partitions: int = Field(3, ge=1, description="Partitions for topics the stack creates.")
    archive_batch_size: int = Field(
        500, ge=1, description="Records per blob file written by the archive consumer."
    )
    archive_flush_s: float = Field(
        2.0, gt=0, description="Longest time the archive holds records before writing."
    )
    archive_dedup_days: int = Field(
        7, ge=0, description="How many days of archived ids the archive checks for repeats."
    )
    archive_engine: str = Field(
        "auto",
        description="Who archives in the local stack: 'consumer' (archive v0), 'flink', or "
        "'auto' (flink when its environment is set up).",
    )

    # --- flink (preprocess, join, archive jobs) ---

    # --- serving (MLServer, registry, prediction events) ---
    serving_url: str = Field(
        "", description="Base URL of the V2 inference server; empty means the local MLServer."
    )
    serving_http_port: int = Field(8090, description="REST port of the local MLServer.")
    serving_grpc_port: int = Field(8091, description="gRPC port of the local MLServer.")
    serving_metrics_port: int = Field(8092, description="Prometheus port of the local MLServer.")
    serving_models: str = Field(
        "speech,ocr,faces,digits", description="Comma-separated models the server loads."
    )
    serving_max_input_bytes: int = Field(
        10 * 1024 * 1024, gt=0, description="Largest media input a model accepts (413 above)."
    )
    serving_max_audio_s: float = Field(
        60.0, gt=0, description="Longest audio input speech-to-text accepts (413 above)."
    )
    serving_event_queue: int = Field(
        10_000, ge=1, description="Prediction events held for Kafka before new ones are dropped."
    )
    serving_timeout_s: float = Field(
        60.0, gt=0, description="How long clients wait for one inference."
    )
    serving_batch_concurrency: int = Field(
        4, ge=1, description="Inferences in flight at once in batch prediction."
    )
    serving_stream_group: str = Field(
        "driftloop-serving-stream", description="Consumer group of the streaming predictor."
    )

    @property
    def resolved_serving_url(self) -> str:
        """The V2 base URL with the local default applied."""
        return (self.serving_url or f"http://127.0.0.1:{self.serving_http_port}").rstrip("/")

    @property
    def serving_model_list(self) -> list[str]:
        return [m.strip() for m in self.serving_models.split(",") if m.strip()]

    # --- monitoring (Prometheus, Pushgateway, Alertmanager, drift) ---

    # --- packaging (dispatcher, eventing) ---
    eventing_dir: Path = Field(
        PROJECT_ROOT / "eventing",
        description="Knative Eventing manifests the local dispatcher reads (sources, triggers).",
    )
    dispatcher_poll_ms: int = Field(
        200, ge=10, description="Longest wait of one Kafka poll in the local dispatcher."
    )
    dispatcher_timeout_s: float = Field(
        30.0, gt=0, description="HTTP timeout per delivery when a source sets no delivery.timeout."
    )

    # --- retraining (policy, training, promotion) ---

    @field_validator("state_dir")
    @classmethod
    def _absolute_state_dir(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @property
    def resolved_blob_url(self) -> str:
        """The blob URL with the embedded default applied."""
        return self.blob_url or (self.state_dir / "blobs").as_uri()

    @property
    def intake_token_set(self) -> frozenset[str]:
        return frozenset(t.strip() for t in self.intake_tokens.split(",") if t.strip())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the process environment, built once per process."""
    return Settings()
