"""Typed settings from the environment (prefix ``DRIFTLOOP_``).

One object, built once at the edge (CLI, function entry point, job ``main``, a runtime
MLServer loads) with ``Settings()`` and passed down; library code never reads ``os.environ``
itself, and there is no cached global to reach for instead.

The fields are declared in groups (one module each: Kafka, blob store and archive, intake
and the functions' auth, serving, monitoring and drift, retraining and promotion, Flink,
the local stack and its dispatcher). ``Settings`` inherits every group, so each field keeps
its flat name (``settings.kafka_bootstrap``) and its variable (``DRIFTLOOP_KAFKA_BOOTSTRAP``).
Lists are given in the comma form and held as tuples; fixed choices are ``Literal``; secrets
are ``SecretStr`` and appear in the clear only through ``reveal``/``to_env``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic_settings import BaseSettings, SettingsConfigDict

from driftloop.settings.fields import PROJECT_ROOT, REVEAL_SECRETS
from driftloop.settings.flink import FlinkSettings
from driftloop.settings.http import FunctionSettings, IntakeSettings
from driftloop.settings.kafka import KafkaSettings
from driftloop.settings.local import DispatcherSettings, LocalStackSettings
from driftloop.settings.monitoring import DriftSettings, MonitoringSettings
from driftloop.settings.retrain import PromotionSettings, RetrainSettings
from driftloop.settings.serving import ServingSettings
from driftloop.settings.storage import ArchiveSettings, BlobSettings

__all__ = ["ENV_PREFIX", "PROJECT_ROOT", "REVEAL_SECRETS", "Settings"]

ENV_PREFIX = "DRIFTLOOP_"


# The groups are listed last-first: pydantic orders the fields from the last base up, so
# dumps and repr start with Kafka.
class Settings(
    BaseSettings,
    DispatcherSettings,
    LocalStackSettings,
    FlinkSettings,
    PromotionSettings,
    RetrainSettings,
    DriftSettings,
    MonitoringSettings,
    ServingSettings,
    FunctionSettings,
    IntakeSettings,
    ArchiveSettings,
    BlobSettings,
    KafkaSettings,
):
    """Everything driftloop can be told from outside. Each field maps to ``DRIFTLOOP_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with ``update`` checked like any other value (pydantic's own copy would
        keep ``"a,b"`` where a tuple belongs, or a choice that is not one)."""
        copy = super().model_copy(deep=deep)
        for name, value in (update or {}).items():
            self.__pydantic_validator__.validate_assignment(copy, name, value)
        return copy

    def reveal(
        self, *, mode: Literal["json", "python"] = "python", include: set[str] | None = None
    ) -> dict[str, Any]:
        """Every field (or those in ``include``) with secrets in the clear and lists in the
        comma form, for a child process or a Flink UDF to rebuild the same settings
        (``Settings.model_validate``/``from_env``). Never log it."""
        return self.model_dump(mode=mode, include=include, context=REVEAL_SECRETS)

    def to_env(self) -> dict[str, str]:
        """The explicitly set fields as ``DRIFTLOOP_*`` variables: what a child process of
        the local stack needs to build the same settings (``from_env`` reads them back).
        (Passed through the environment, never on a command line, since it may carry
        credentials.)"""
        values = self.reveal(mode="json", include=set(self.model_fields_set))
        return {
            f"{ENV_PREFIX}{name.upper()}": str(value)
            for name, value in values.items()
            if value is not None
        }

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Settings:
        """Settings from a mapping of ``DRIFTLOOP_*`` variables (other keys are ignored);
        the mapping wins over the process environment."""
        # Strings, parsed by each field's rules exactly as the environment's are.
        values: dict[str, Any] = {
            k[len(ENV_PREFIX) :].lower(): v for k, v in env.items() if k.startswith(ENV_PREFIX)
        }
        return cls(**values)
