"""The HTTP surfaces: feedback-intake and the control-plane functions (limits and auth)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from driftloop.settings.fields import CommaList, SecretList

__all__ = ["FunctionSettings", "IntakeSettings"]


class IntakeSettings(BaseModel):
    """feedback-intake: who may post, how much, and how long it waits for Kafka."""

    intake_tokens: SecretList = Field(
        (),
        description="Comma-separated bearer tokens accepted by feedback-intake; "
        "empty disables auth.",
    )
    intake_max_body_bytes: int = Field(
        1024 * 1024, gt=0, description="Largest request body feedback-intake accepts."
    )
    intake_max_batch_events: int = Field(
        1000,
        ge=1,
        description="Most events one batch-mode request to feedback-intake may hold (413 above).",
    )
    max_json_depth: int = Field(
        64,
        ge=2,
        le=500,
        description="Deepest nesting of arrays and objects any driftloop HTTP surface parses "
        "(400 above).",
    )
    intake_send_timeout_s: float = Field(
        10.0, gt=0, description="How long intake waits for Kafka's acknowledgement before 503."
    )
    intake_retry_after_s: int = Field(
        5, ge=1, description="Retry-After seconds sent with 503 when Kafka is unavailable."
    )
    intake_dedup_window_s: float = Field(
        900.0,
        ge=0,
        description="Replay window of feedback-intake: an event whose (source, id) is in "
        "driftloop.feedback from the last this many seconds is answered 202 and not written "
        "again (each intake process reads the topic from now minus the window on start and "
        "answers 503 until it has); 0 disables it.",
    )
    intake_dedup_max_entries: int = Field(
        200_000,
        ge=1,
        description="Most (source, id)s the replay window holds per intake process (about "
        "180 bytes each: 36 MB at the default); above it the oldest leave before their time.",
    )

    @property
    def intake_token_set(self) -> frozenset[str]:
        """The accepted tokens in the clear (for comparison only: never log them)."""
        return frozenset(t.get_secret_value() for t in self.intake_tokens)


class FunctionSettings(BaseModel):
    """drift-check, retrain-trigger and promote: body limit and who may call them."""

    function_max_body_bytes: int = Field(
        8 * 1024 * 1024,
        gt=0,
        description="Largest request body drift-check, retrain-trigger and promote read "
        "(413 above, by Content-Length or by the streamed size).",
    )
    function_tokens: SecretList = Field(
        (),
        description="Comma-separated bearer tokens drift-check, retrain-trigger and promote "
        "accept (the first is the one the local dispatcher and Alertmanager send); empty with "
        "no OIDC issuer leaves them open.",
    )
    function_oidc_issuer: str = Field(
        "",
        description="Issuer (iss) of the OIDC tokens Knative Eventing delivers with, e.g. "
        "https://kubernetes.default.svc.cluster.local; empty disables OIDC.",
    )
    function_oidc_jwks_url: str = Field(
        "",
        description="Where the issuer's signing keys (JWKS) are read, e.g. "
        "https://kubernetes.default.svc/openid/v1/jwks; empty means <issuer>/openid/v1/jwks.",
    )
    function_oidc_audience: str = Field(
        "", description="Audience (aud) a delivery's token must name: the sink's audience."
    )
    function_oidc_ca_file: Path | None = Field(
        None,
        description="PEM CA bundle that verifies the JWKS endpoint (in a pod: "
        "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt); empty uses the system's.",
    )
    function_oidc_token_file: Path | None = Field(
        None,
        description="Bearer token file sent when reading the JWKS (in a pod: the service "
        "account token); empty sends none.",
    )
    function_oidc_subjects: CommaList = Field(
        (),
        description="Comma-separated patterns (fnmatch) a token's subject must match, e.g. "
        "system:serviceaccount:driftloop:* (Eventing's per-source service accounts); empty "
        "accepts any subject the issuer signed for the audience.",
    )
    function_oidc_leeway_s: float = Field(
        30.0, ge=0, description="Clock skew allowed when checking a token's expiry."
    )

    @property
    def function_token_list(self) -> list[str]:
        """The control-plane tokens in the clear, in their order (the first is the one
        clients send). For comparison and sending only: never log them."""
        return [t.get_secret_value() for t in self.function_tokens]
