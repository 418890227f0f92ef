"""Typed settings from the environment (prefix ``DRIFTLOOP_``).

One object, built once at the edge (CLI, function entry point, job ``main``) and
passed down; library code never reads ``os.environ`` itself.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_serializer, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
REVEAL_SECRETS = {"reveal_secrets": True}
"""``model_dump(context=...)`` that writes secrets in the clear (``Settings.reveal``)."""


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
    s3_secret_access_key: SecretStr | None = Field(
        None, description="S3 secret key (a secret: never logged or shown)."
    )
    s3_region: str = Field("us-east-1", description="S3 region name.")
    intake_tokens: SecretStr = Field(
        SecretStr(""),
        description="Comma-separated bearer tokens accepted by feedback-intake; "
        "empty disables auth.",
    )
    intake_max_body_bytes: int = Field(
        1024 * 1024, gt=0, description="Largest request body feedback-intake accepts."
    )
    intake_max_batch_events: int = Field(
        1000, ge=1,
        description="Most events one batch-mode request to feedback-intake may hold (413 above).",
    )
    function_max_body_bytes: int = Field(
        8 * 1024 * 1024, gt=0,
        description="Largest request body drift-check, retrain-trigger and promote read "
        "(413 above, by Content-Length or by the streamed size).",
    )
    max_json_depth: int = Field(
        64, ge=2, le=500,
        description="Deepest nesting of arrays and objects any driftloop HTTP surface parses "
        "(400 above).",
    )
    intake_send_timeout_s: float = Field(
        10.0, gt=0, description="How long intake waits for Kafka's acknowledgement before 503."
    )
    intake_retry_after_s: int = Field(
        5, ge=1, description="Retry-After seconds sent with 503 when Kafka is unavailable."
    )
    intake_port: int = Field(8080, description="Port of feedback-intake in the local stack.")
    drift_check_port: int = Field(8082, description="Port of drift-check in the local stack.")
    kafka_port: int = Field(9092, description="Broker port of the local Kafka.")
    kafka_controller_port: int = Field(9093, description="Controller port of the local Kafka.")
    kafka_heap: str = Field("768m", description="JVM heap of the local Kafka broker.")
    kafka_max_message_bytes: int = Field(
        2 * 1024 * 1024, ge=64 * 1024,
        description="The record size every driftloop producer may send (max_request_size, also "
        "the Flink sinks'); topics are created with max.message.bytes this plus 64 KiB of "
        "framing. Bigger records are dead-lettered (with their reason) or carried by reference.",
    )
    components: str = Field(
        "",
        description="Comma-separated names of the local-stack components to start; "
        "empty starts every component that is set up.",
    )
    topic_partitions: int = Field(3, ge=1, description="Partitions for topics the stack creates.")
    archive_batch_size: int = Field(
        500, ge=1, description="Records per blob file written by the archive consumer."
    )
    archive_flush_s: float = Field(
        2.0, gt=0, description="Longest time the archive holds records before writing."
    )
    archive_dedup_days: int = Field(
        7, ge=0, description="Days of archived partitions the archive reads up front to recognise "
        "repeats; an event dated earlier also reads its own day's partition."
    )
    archive_engine: str = Field(
        "auto",
        description="Who archives in the local stack: 'consumer' (archive v0), 'flink', or "
        "'auto' (flink when its environment is set up).",
    )

    # --- flink (preprocess, join, archive jobs) ---
    flink_venv: Path = Field(
        PROJECT_ROOT / ".venv-flink",
        description="Python environment with PyFlink that runs the jobs (make setup creates it).",
    )
    flink_lib_dir: Path | None = Field(
        None, description="Connector jars for the jobs; empty means <cache_dir>/flink/lib."
    )
    flink_pipelines: str = Field(
        "preprocess,join,archive",
        description="Pipelines the local Flink application runs, comma separated.",
    )
    flink_parallelism: int = Field(1, ge=1, description="Default parallelism of the jobs.")
    flink_execution_mode: str = Field(
        "thread", description="Python UDF execution mode: 'thread' (fastest) or 'process'."
    )
    flink_bundle_size: int = Field(
        64, ge=1, description="Records per Python bundle (also the Arrow batch size)."
    )
    flink_bundle_time_ms: int = Field(
        200, ge=1, description="Longest time a Python bundle waits before it is processed."
    )
    flink_checkpoint_dir: str = Field(
        "", description="Checkpoint URL or folder; empty means <state_dir>/flink/checkpoints."
    )
    flink_checkpoint_interval_ms: int = Field(
        2000, ge=100, description="Checkpoint interval; output commits at this pace."
    )
    flink_group_id: str = Field("driftloop-flink", description="Kafka group id prefix of the jobs.")
    flink_audio_target_dbfs: float = Field(
        -20.0, description="RMS loudness preprocessed audio is normalized to."
    )
    flink_audio_peak_dbfs: float = Field(-1.0, description="Peak limit of preprocessed audio.")
    flink_audio_max_duration_s: float = Field(
        60.0, gt=0, description="Longest audio input accepted."
    )
    flink_image_width: int = Field(224, ge=1, description="Width images are letterboxed to.")
    flink_image_height: int = Field(224, ge=1, description="Height images are letterboxed to.")
    flink_image_mode: str = Field(
        "RGB", description="Colour mode of preprocessed images: RGB or L."
    )
    flink_max_input_bytes: int = Field(
        8 * 1024 * 1024, ge=1, description="Largest raw input accepted by preprocess."
    )
    flink_inline_max_bytes: int = Field(
        256 * 1024, ge=0,
        description="Preprocessed payloads up to this size are inlined (base64), bigger ones "
        "go to the blob store as a reference.",
    )
    flink_join_window_s: float = Field(
        3600.0, gt=0,
        description="How long a prediction waits for feedback (and feedback for its prediction).",
    )
    flink_archive_roll_s: float = Field(
        10.0, gt=0, description="Longest time an archive file stays open before it is committed."
    )
    flink_join_corrections_s: float = Field(
        7 * 24 * 3600.0, ge=0,
        description="How long the join keeps a labeled prediction after its window, so a "
        "later correction (feedback for the same prediction) still applies; 0 drops it.",
    )
    flink_rest_port: int = Field(
        8095, ge=0, le=65535,
        description="REST port of the local Flink mini-cluster (job state and restarts for "
        "`driftloop status`); 0 leaves it to Flink.",
    )
    flink_restart_grace_s: float = Field(
        120.0, gt=0,
        description="The Flink job counts as unhealthy while it restarted less than this long ago "
        "(a job stuck in a restart loop stays unhealthy).",
    )

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

    serving_max_request_bytes: int = Field(
        16 * 1024 * 1024, gt=0,
        description="Largest request body MLServer reads (413 by Content-Length, or once the "
        "streamed body passes it, before any JSON is parsed).",
    )
    serving_max_sample_rate: int = Field(
        192_000, ge=16_000, le=768_000,
        description="Highest WAV sample rate accepted (400 above; the lowest is 1,000 Hz).",
    )
    serving_max_image_pixels: int = Field(
        40_000_000, gt=0, description="Most pixels (width x height) of one image (413 above)."
    )
    serving_ocr_max_pixels: int = Field(
        4_000_000, gt=0, description="Most pixels of one OCR image (413 above; tesseract's "
        "time grows with them)."
    )
    serving_inference_timeout_s: float = Field(
        30.0, gt=0, description="Longest one inference may run (504 after it; OCR kills "
        "tesseract then)."
    )
    serving_model_timeouts: str = Field(
        "", pattern=r"^\s*([a-z0-9._-]+=\d+(\.\d+)?\s*(,\s*|$))*$",
        description="Per-model inference timeouts overriding the default, e.g. "
        "'ocr=20,speech=45' (seconds).",
    )
    serving_model_threads: int = Field(
        2, ge=1, le=64, description="Inferences of one model that run at once (the rest wait), "
        "so one slow model cannot take every worker thread.",
    )
    serving_memory_limit_mb: int = Field(
        2048, ge=256, description="Memory the model server must stay within (the container "
        "limit in seldon/k8s; hostile-input tests hold MLServer to it)."
    )

    def serving_timeout_for(self, model: str) -> float:
        """The inference time limit of ``model`` (its override, else the default)."""
        for part in self.serving_model_timeouts.split(","):
            name, sep, value = part.strip().partition("=")
            if sep and name.strip() == model:
                return float(value)
        return self.serving_inference_timeout_s

    @property
    def resolved_serving_url(self) -> str:
        """The V2 base URL with the local default applied."""
        return (self.serving_url or f"http://127.0.0.1:{self.serving_http_port}").rstrip("/")

    @property
    def serving_model_list(self) -> list[str]:
        return [m.strip() for m in self.serving_models.split(",") if m.strip()]

    # --- monitoring (Prometheus, Pushgateway, Alertmanager, drift) ---
    prometheus_port: int = Field(9090, description="Port of the local Prometheus.")
    pushgateway_port: int = Field(9091, description="Port of the local Pushgateway.")
    alertmanager_port: int = Field(
        9094, description="Port of the local Alertmanager (9093 is Kafka's controller)."
    )
    node_exporter_port: int = Field(
        9100, description="Port of the local node-exporter (host CPU, memory, disk, network)."
    )
    kafka_metrics_port: int = Field(
        9404, description="Port of the JMX exporter agent inside the local Kafka broker."
    )
    kafka_lag_port: int = Field(
        9308, description="Port of the local consumer-group lag exporter (kafka-lag)."
    )
    serving_stream_metrics_port: int = Field(
        8096, ge=0, le=65535,
        description="Prometheus /metrics port of the local streaming predictor (0: not served).",
    )
    prometheus_url: str = Field("", description="Prometheus base URL; empty means the local one.")
    pushgateway_url: str = Field(
        "", description="Pushgateway base URL drift-check pushes to; empty means the local one."
    )
    alertmanager_url: str = Field(
        "", description="Alertmanager base URL; empty means the local one."
    )
    alert_webhook_url: str = Field(
        "http://127.0.0.1:8083/",
        description="Where Alertmanager posts alerts: the retrain-trigger function's URL.",
    )
    scrape_interval_s: float = Field(
        5.0, gt=0, description="Scrape and rule evaluation interval of the local Prometheus."
    )
    flink_metrics_targets: str = Field(
        "", description="Comma-separated host:port of Flink Prometheus reporters to scrape."
    )
    function_metrics_targets: str = Field(
        "", description="Comma-separated host:port of functions serving /metrics to scrape."
    )
    drift_window_s: float = Field(
        3600.0, gt=0, description="How far back drift-check reads records for the current window."
    )
    drift_window_max_records: int = Field(
        10_000, ge=1, description="Most records per topic drift-check reads into one window."
    )
    drift_min_records: int = Field(
        30, ge=1, description="Fewest records a window needs before drift-check judges it."
    )
    drift_check_every_records: int = Field(
        500, ge=1, description="Kafka records per model that fill a window and trigger a check."
    )
    drift_share: float = Field(
        0.5, gt=0, le=1, description="Share of drifted features at which the dataset drifts."
    )
    drift_nan_policy: str = Field(
        "raise", pattern="^(raise|omit)$",
        description="±inf values in an ad hoc drift-check window: 'raise' (400 naming the "
        "feature) or 'omit'. Missing values (null, NaN; ±inf in windows read from Kafka) are "
        "always counted per feature and left out.",
    )
    drift_check_max_models: int = Field(
        100, ge=1, le=10_000,
        description="Most model names one drift-check ping may list (data.models); more is a 400.",
    )

    @property
    def resolved_prometheus_url(self) -> str:
        return (self.prometheus_url or f"http://127.0.0.1:{self.prometheus_port}").rstrip("/")

    @property
    def resolved_pushgateway_url(self) -> str:
        return (self.pushgateway_url or f"http://127.0.0.1:{self.pushgateway_port}").rstrip("/")

    @property
    def resolved_alertmanager_url(self) -> str:
        return (self.alertmanager_url or f"http://127.0.0.1:{self.alertmanager_port}").rstrip("/")


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
    dispatcher_metrics_port: int = Field(
        8093, ge=0, le=65535,
        description="Prometheus /metrics port of the local dispatcher (0: not served).",
    )
    dead_letter_max_value_bytes: int = Field(
        256 * 1024, ge=1024, le=768 * 1024,
        description="Largest value a dead letter carries; a longer one keeps its head, its size, "
        "its sha256 and its source topic/partition/offset.",
    )

    # --- retraining (policy, training, promotion) ---
    policy_dir: Path = Field(
        Path(__file__).resolve().parent / "policies",
        description="Folder of per-model retrain/promotion policies (<model>.yaml). The "
        "default is the copy shipped inside the driftloop package (policies/ in a checkout).",
    )
    retrain_backend: str = Field(
        "",
        description="Training backend overriding the policy's: local, kubernetes, airflow or "
        "kubeflow; empty keeps the policy's choice.",
    )
    retrain_port: int = Field(
        8083, description="Port of retrain-trigger in the local stack (alert_webhook_url's)."
    )
    promote_port: int = Field(8084, description="Port of promote in the local stack.")
    retrain_job_timeout_s: float = Field(
        900.0, gt=0,
        description="A run still 'running' after this long counts as dead (frees its slot).",
    )
    promote_bake_s: float | None = Field(
        None, ge=0, description="Overrides every policy's canary bake period (seconds)."
    )
    promote_evidence_grace_s: float = Field(
        60.0, ge=0,
        description="After the bake period, how long the canary waits for missing evidence "
        "(request/error/latency metrics, labeled samples) before rolling back with "
        "'no evidence: ...'.",
    )
    k8s_namespace: str = Field("driftloop", description="Namespace of Kubernetes training Jobs.")
    k8s_training_image: str = Field(
        "ghcr.io/driftloop/driftloop:latest", description="Image of Kubernetes training Jobs."
    )
    airflow_url: str = Field("", description="Airflow REST API base URL (airflow backend).")
    airflow_dag: str = Field("driftloop_train", description="DAG id the airflow backend runs.")
    kfp_host: str = Field("", description="Kubeflow Pipelines API host (kubeflow backend).")
    kfp_pipeline: str = Field(
        "driftloop-train", description="Pipeline name the kubeflow backend runs."
    )

    # --- security (Kafka clients, control-plane auth) ---
    kafka_security_protocol: str = Field(
        "PLAINTEXT", pattern="^(PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL)$",
        description="How every Kafka client connects: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.",
    )
    kafka_sasl_mechanism: str = Field(
        "SCRAM-SHA-512", pattern="^(PLAIN|SCRAM-SHA-256|SCRAM-SHA-512)$",
        description="SASL mechanism of the SASL_* protocols (Strimzi's KafkaUser: SCRAM-SHA-512).",
    )
    kafka_username: str = Field("", description="SASL user name of the Kafka clients.")
    kafka_password: SecretStr = Field(
        SecretStr(""), description="SASL password of the Kafka clients (a secret)."
    )
    kafka_ca_file: Path | None = Field(
        None, description="PEM file of the CA that signed the brokers' certificates "
        "(SSL/SASL_SSL); empty uses the system's trust store.",
    )
    function_tokens: SecretStr = Field(
        SecretStr(""),
        description="Comma-separated bearer tokens drift-check, retrain-trigger and promote "
        "accept (the first is the one the local dispatcher and Alertmanager send); empty with "
        "no OIDC issuer leaves them open.",
    )
    function_oidc_issuer: str = Field(
        "", description="Issuer (iss) of the OIDC tokens Knative Eventing delivers with, e.g. "
        "https://kubernetes.default.svc.cluster.local; empty disables OIDC.",
    )
    function_oidc_jwks_url: str = Field(
        "", description="Where the issuer's signing keys (JWKS) are read, e.g. "
        "https://kubernetes.default.svc/openid/v1/jwks; empty means <issuer>/openid/v1/jwks.",
    )
    function_oidc_audience: str = Field(
        "", description="Audience (aud) a delivery's token must name: the sink's audience."
    )
    function_oidc_ca_file: Path | None = Field(
        None, description="PEM CA bundle that verifies the JWKS endpoint (in a pod: "
        "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt); empty uses the system's.",
    )
    function_oidc_token_file: Path | None = Field(
        None, description="Bearer token file sent when reading the JWKS (in a pod: the service "
        "account token); empty sends none.",
    )
    function_oidc_subjects: str = Field(
        "", description="Comma-separated patterns (fnmatch) a token's subject must match, e.g. "
        "system:serviceaccount:driftloop:* (Eventing's per-source service accounts); empty "
        "accepts any subject the issuer signed for the audience.",
    )
    function_oidc_leeway_s: float = Field(
        30.0, ge=0, description="Clock skew allowed when checking a token's expiry."
    )

    @field_serializer("s3_secret_access_key", "intake_tokens", "kafka_password",
                      "function_tokens")
    def _secret(self, v: SecretStr | None, info: Any) -> Any:
        """Secrets dump masked, except with ``context=REVEAL_SECRETS`` (child processes)."""
        if v is None:
            return None
        if info.context and info.context.get("reveal_secrets"):
            return v.get_secret_value()
        return str(v) if info.mode == "json" else v

    def reveal(self, *, mode: str = "python") -> dict[str, Any]:
        """Every field with secrets in the clear, for a child process or a Flink UDF to
        rebuild the same settings. Never log it."""
        return self.model_dump(mode=mode, context=REVEAL_SECRETS)

    @field_validator("state_dir")
    @classmethod
    def _absolute_state_dir(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    def to_env(self) -> dict[str, str]:
        """The explicitly set fields as ``DRIFTLOOP_*`` variables: what a child process of
        the local stack needs to build the same settings. (Passed through the environment,
        never on a command line, since it may carry credentials.)"""
        out: dict[str, str] = {}
        for name in self.model_fields_set:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if value is not None:
                out[f"DRIFTLOOP_{name.upper()}"] = str(value)
        return out

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Settings:
        """Settings from a mapping of ``DRIFTLOOP_*`` variables (other keys are ignored);
        the mapping wins over the process environment."""
        prefix = "DRIFTLOOP_"
        values = {k[len(prefix):].lower(): v for k, v in env.items() if k.startswith(prefix)}
        return cls(**values)

    @property
    def resolved_blob_url(self) -> str:
        """The blob URL with the embedded default applied."""
        return self.blob_url or (self.state_dir / "blobs").as_uri()

    @property
    def intake_token_set(self) -> frozenset[str]:
        return _csv_set(self.intake_tokens.get_secret_value())

    @property
    def function_token_list(self) -> list[str]:
        """The control-plane tokens in their order (the first is the one clients send)."""
        return [t.strip() for t in self.function_tokens.get_secret_value().split(",")
                if t.strip()]


def _csv_set(value: str) -> frozenset[str]:
    return frozenset(t.strip() for t in value.split(",") if t.strip())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the process environment, built once per process."""
    return Settings()
