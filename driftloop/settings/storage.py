"""Where driftloop keeps things: the state folder, the blob store (file or S3), the archive."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from driftloop.settings.fields import PROJECT_ROOT, ArchiveEngine, Secret

__all__ = ["ArchiveSettings", "BlobSettings"]


class BlobSettings(BaseModel):
    """Local folders and the blob store every component reads and writes."""

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
    s3_access_key_id: str | None = Field(
        None,
        description="S3 access key id (an identifier, not a secret: the secret is "
        "s3_secret_access_key).",
    )
    s3_secret_access_key: Secret | None = Field(
        None, description="S3 secret key (a secret: never logged or shown)."
    )
    s3_region: str = Field("us-east-1", description="S3 region name.")

    @field_validator("state_dir")
    @classmethod
    def _absolute_state_dir(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @property
    def resolved_blob_url(self) -> str:
        """The blob URL with the embedded default applied."""
        return self.blob_url or (self.state_dir / "blobs").as_uri()


class ArchiveSettings(BaseModel):
    """The archive of every event in the blob store (archive v0 consumer or the Flink job)."""

    archive_batch_size: int = Field(
        500, ge=1, description="Records per blob file written by the archive consumer."
    )
    archive_flush_s: float = Field(
        2.0, gt=0, description="Longest time the archive holds records before writing."
    )
    archive_dedup_days: int = Field(
        7,
        ge=0,
        description="Days of archived partitions the archive reads up front to recognise "
        "repeats; an event dated earlier also reads its own day's partition.",
    )
    archive_engine: ArchiveEngine = Field(
        "auto",
        description="Who archives in the local stack: 'consumer' (archive v0), 'flink', or "
        "'auto' (flink when its environment is set up).",
    )
