"""Flink: the preprocess, join and archive jobs (environment, pacing, transforms)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from driftloop.settings.fields import PROJECT_ROOT, PipelineList

__all__ = ["FlinkSettings"]


class FlinkSettings(BaseModel):
    """The Flink application of the local stack and the jobs' own parameters."""

    flink_venv: Path = Field(
        PROJECT_ROOT / ".venv-flink",
        description="Python environment with PyFlink that runs the jobs (make setup creates it).",
    )
    flink_lib_dir: Path | None = Field(
        None, description="Connector jars for the jobs; empty means <cache_dir>/flink/lib."
    )
    flink_pipelines: PipelineList = Field(
        ("preprocess", "join", "archive"),
        description="Pipelines the local Flink application runs, comma separated "
        "(preprocess, join, archive).",
    )
    flink_parallelism: int = Field(1, ge=1, description="Default parallelism of the jobs.")
    flink_execution_mode: Literal["thread", "process"] = Field(
        "thread", description="Python UDF execution mode: 'thread' (fastest) or 'process'."
    )
    flink_bundle_size: int = Field(
        64, ge=1, description="Records per Python bundle (also the Arrow batch size)."
    )
    flink_bundle_time_ms: int = Field(
        200, ge=1, description="Longest time a Python bundle waits before it is processed."
    )
    flink_operator_chaining: bool = Field(
        True,
        description="Chain the jobs' operators into one task (pipeline.operator-chaining."
        "enabled). Off, the Kafka source, the Python function and the sink run in threads of "
        "their own and overlap: preprocess alone runs faster (flink/README.md, Performance), "
        "but every task checkpoints on its own, which the local stack's one job of all "
        "pipelines pays for.",
    )
    flink_checkpoint_dir: str = Field(
        "", description="Checkpoint URL or folder; empty means <state_dir>/flink/checkpoints."
    )
    flink_checkpoint_interval_ms: int = Field(
        2000, ge=100, description="Checkpoint interval; output commits at this pace."
    )
    flink_unaligned_checkpoints: bool = Field(
        False,
        description="Let checkpoint barriers overtake the records queued between tasks "
        "(execution.checkpointing.unaligned.enabled); the checkpoint then stores them. Off "
        "by default: measured on a failover, the first checkpoint then waited for the busy "
        "Python parse task instead (flink/README.md, Failover), and every checkpoint stored "
        "in-flight records.",
    )
    flink_aligned_checkpoint_timeout_ms: int = Field(
        0, ge=0,
        description="With unaligned checkpoints: a checkpoint starts aligned and turns "
        "unaligned once its barriers waited this long "
        "(execution.checkpointing.aligned-checkpoint-timeout); 0 means unaligned from the "
        "start.",
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
    flink_image_mode: Literal["RGB", "L"] = Field(
        "RGB", description="Colour mode of preprocessed images: RGB or L."
    )
    flink_max_input_bytes: int = Field(
        8 * 1024 * 1024, ge=1, description="Largest raw input accepted by preprocess."
    )
    flink_inline_max_bytes: int = Field(
        64 * 1024,
        ge=0,
        description="Preprocessed payloads whose base64 form is at most this many bytes travel "
        "inline; bigger ones are written to the blob store and the record carries a reference "
        "(payload.blob_key and the CloudEvents dataref; claim check on the output side).",
    )
    flink_join_window_s: float = Field(
        3600.0,
        gt=0,
        description="How long a prediction waits for feedback (and feedback for its prediction).",
    )
    flink_archive_roll_s: float = Field(
        10.0, gt=0, description="Longest time an archive file stays open before it is committed."
    )
    flink_join_corrections_s: float = Field(
        7 * 24 * 3600.0,
        ge=0,
        description="How long the join keeps a labeled prediction after its window, so a "
        "later correction (feedback for the same prediction) still applies; 0 drops it.",
    )
    flink_rest_port: int = Field(
        8095,
        ge=0,
        le=65535,
        description="REST port of the JobManager (job submission, job state, checkpoints and "
        "restarts for `driftloop status`); 0 leaves it to Flink (mini-cluster only).",
    )
    flink_target: Literal["local", "session"] = Field(
        "local",
        description="Where the application runs: 'session' submits it to the standalone "
        "session cluster at flink_rest_port (what `driftloop up` starts); 'local' executes "
        "where the program runs: its own mini-cluster (unit-level tests, one-off runs), or the "
        "cluster that `flink run` or the Kubernetes operator submitted it to.",
    )
    flink_jobmanager_rpc_port: int = Field(
        6123, ge=1, le=65535, description="RPC port of the local session cluster's JobManager."
    )
    flink_taskmanagers: int = Field(
        1, ge=1, le=16, description="TaskManager processes of the local session cluster."
    )
    flink_taskmanager_slots: int = Field(
        4, ge=1, description="Task slots per TaskManager (taskmanager.numberOfTaskSlots)."
    )
    flink_metrics_port: int = Field(
        9249,
        ge=1,
        le=65535,
        description="Prometheus reporter port of the JobManager; TaskManager n (1, 2, ...) "
        "serves on this port + n.",
    )
    flink_zookeeper_port: int = Field(
        2181,
        ge=1,
        le=65535,
        description="Client port of the ZooKeeper server the 'ha' topology runs for JobManager "
        "high availability (flink-zookeeper, from the PyFlink wheel's distribution).",
    )
    flink_standby_rest_port: int = Field(
        8097,
        ge=1,
        le=65535,
        description="REST port of the 'ha' topology's standby JobManager (it takes the lead, "
        "and the running job, when the first one dies); its Prometheus reporter serves on "
        "flink_metrics_port + flink_taskmanagers + 1.",
    )
    flink_restart_grace_s: float = Field(
        120.0,
        gt=0,
        description="The Flink job counts as unhealthy while it restarted less than this long ago "
        "(a job stuck in a restart loop stays unhealthy).",
    )
