"""A real S3-compatible server on loopback: Versity S3 Gateway over a local folder.

Built from the Go module proxy by ``make setup`` (``infra/setup/30-s3.sh``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from driftloop.errors import StackError
from driftloop.local.process import tcp_open


@dataclass(frozen=True)
class S3Server:
    """Command line and credentials of one gateway instance."""

    binary: Path
    root_dir: Path
    port: int
    access_key: str = "driftloop"
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    host: str = "127.0.0.1"
    region: str = "us-east-1"

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def argv(self) -> list[str]:
        if not self.binary.exists():
            raise StackError(f"S3 server binary missing at {self.binary}: run make setup")
        return [str(self.binary), "--port", f"{self.host}:{self.port}", "--region", self.region,
                "posix", str(self.root_dir)]

    def env(self) -> dict[str, str]:
        """Credentials go through the environment so they never show in ``ps``."""
        return {"ROOT_ACCESS_KEY": self.access_key, "ROOT_SECRET_KEY": self.secret_key}

    def prepare(self) -> None:
        self.root_dir.mkdir(parents=True, exist_ok=True)

    def healthy(self) -> bool:
        return tcp_open(self.host, self.port)
