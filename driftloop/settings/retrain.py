"""Retraining and promotion: policies, training backends, the canary's bake and evidence."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["PromotionSettings", "RetrainSettings"]


class RetrainSettings(BaseModel):
    """retrain-trigger and the training backends it starts jobs on."""

    policy_dir: Path = Field(
        Path(__file__).resolve().parent.parent / "policies",
        description="Folder of per-model retrain/promotion policies (<model>.yaml). The "
        "default is the copy shipped inside the driftloop package (policies/ in a checkout).",
    )
    retrain_backend: Literal["", "local", "kubernetes", "airflow", "kubeflow"] = Field(
        "",
        description="Training backend overriding the policy's: local, kubernetes, airflow or "
        "kubeflow; empty keeps the policy's choice.",
    )
    retrain_job_timeout_s: float = Field(
        900.0,
        gt=0,
        description="A run still 'running' after this long counts as dead (frees its slot).",
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


class PromotionSettings(BaseModel):
    """promote: how long a canary bakes and waits for its evidence."""

    promote_bake_s: float | None = Field(
        None, ge=0, description="Overrides every policy's canary bake period (seconds)."
    )
    promote_evidence_grace_s: float = Field(
        60.0,
        ge=0,
        description="After the bake period, how long the canary waits for missing evidence "
        "(request/error/latency metrics, labeled samples) before rolling back with "
        "'no evidence: ...'.",
    )
