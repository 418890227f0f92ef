"""Serving: the V2 inference server (MLServer), its models, limits and prediction events."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from driftloop.catalogue import FAMILIES
from driftloop.settings.fields import CommaList, ModelTimeouts

__all__ = ["ServingSettings"]


class ServingSettings(BaseModel):
    """MLServer, the registry's models it loads, input limits and the streaming predictor."""

    serving_url: str = Field(
        "", description="Base URL of the V2 inference server; empty means the local MLServer."
    )
    serving_http_port: int = Field(8090, description="REST port of the local MLServer.")
    serving_grpc_port: int = Field(8091, description="gRPC port of the local MLServer.")
    serving_metrics_port: int = Field(8092, description="Prometheus port of the local MLServer.")
    serving_stream_metrics_port: int = Field(
        8096,
        ge=0,
        le=65535,
        description="Prometheus /metrics port of the local streaming predictor (0: not served).",
    )
    serving_models: CommaList = Field(
        tuple(FAMILIES),
        description="Comma-separated models the server loads (default: every catalogue family).",
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
    serving_spool: bool = Field(
        True,
        description="Keep each prediction event in a local write-ahead spool until Kafka "
        "acknowledges it, so a killed model server loses none (the next start resends them).",
    )
    serving_spool_dir: Path | None = Field(
        None,
        description="Folder of the prediction-event spool (one per server; its worker "
        "processes share it); empty means <state_dir>/serving/prediction-spool. On "
        "Kubernetes a volume that outlives the container.",
    )
    serving_spool_max_mb: int = Field(
        512,
        ge=1,
        description="Most unacknowledged prediction events the spool holds, in MiB; beyond "
        "it events are kept in memory only (counted).",
    )
    serving_spool_fsync: bool = Field(
        False,
        description="fsync every spooled prediction event: survives a machine crash too, at "
        "a disk flush per inference (a process kill keeps what was written either way).",
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
        16 * 1024 * 1024,
        gt=0,
        description="Largest request body MLServer reads (413 by Content-Length, or once the "
        "streamed body passes it, before any JSON is parsed).",
    )
    serving_max_sample_rate: int = Field(
        192_000,
        ge=16_000,
        le=768_000,
        description="Highest WAV sample rate accepted (400 above; the lowest is 1,000 Hz).",
    )
    serving_max_image_pixels: int = Field(
        40_000_000, gt=0, description="Most pixels (width x height) of one image (413 above)."
    )
    serving_ocr_max_pixels: int = Field(
        4_000_000,
        gt=0,
        description="Most pixels of one OCR image (413 above; tesseract's time grows with them).",
    )
    serving_inference_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest one inference may run (504 after it; OCR kills tesseract then).",
    )
    serving_model_timeouts: ModelTimeouts = Field(
        default_factory=dict,
        description="Per-model inference timeouts overriding the default, e.g. "
        "'ocr=20,speech=45' (seconds).",
    )
    serving_model_threads: int = Field(
        2,
        ge=1,
        le=64,
        description="Inferences of one model that run at once (the rest wait), "
        "so one slow model cannot take every worker thread.",
    )
    serving_memory_limit_mb: int = Field(
        2048,
        ge=256,
        description="Memory the model server must stay within (the container "
        "limit in seldon/k8s; hostile-input tests hold MLServer to it).",
    )

    @field_validator("serving_spool_dir")
    @classmethod
    def _absolute_spool_dir(cls, v: Path | None) -> Path | None:
        return v.expanduser().resolve() if v is not None and str(v) not in ("", ".") else None

    def serving_timeout_for(self, model: str) -> float:
        """The inference time limit of ``model`` (its override, else the default)."""
        return self.serving_model_timeouts.get(model, self.serving_inference_timeout_s)

    @property
    def resolved_serving_url(self) -> str:
        """The V2 base URL with the local default applied."""
        return (self.serving_url or f"http://127.0.0.1:{self.serving_http_port}").rstrip("/")

    @property
    def serving_model_list(self) -> list[str]:
        """``serving_models`` as a list (MLServer's repository arguments are JSON)."""
        return list(self.serving_models)
