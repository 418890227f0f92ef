"""Per-model retrain and promotion policy: declarative YAML, pure decisions.

A policy lives in ``policies/<model>.yaml`` (see ``policies/README.md``). ``decide`` takes
the policy, what is known now (``Signals``) and the runs so far (``RunHistory``) and
returns a frozen ``Decision`` that says which rule fired with which values, and what
(cooldown, duplicate, concurrency cap) held a fired rule back. No I/O happens here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from driftloop import strict_yaml
from driftloop.catalogue import FAMILIES
from driftloop.errors import FieldError, NotFound, ValidationFailed
from driftloop.events import pydantic_field_errors
from driftloop.inputlog import InputLogging
from driftloop.naming import safe_segment

BACKENDS = ("local", "kubernetes", "airflow", "kubeflow")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeedbackVolumeRule(_Strict):
    """Retrain once this many labeled feedback events arrived since the last training."""

    min_events: int = Field(gt=0)


class QualityRule(_Strict):
    """Retrain when quality crosses ``threshold`` (below for higher-is-better metrics)."""

    threshold: float
    min_samples: int = Field(50, ge=1)
    metric: str | None = None
    """Defaults to the model's declared metric (``driftloop.catalogue``)."""


class EstimatedQualityRule(_Strict):
    """Retrain when the quality estimated from confidences, before labels
    (``driftloop_quality_estimated``, pushed by drift-check), crosses ``threshold``:
    below it for higher-is-better metrics, above it for wer/cer."""

    threshold: float
    min_samples: int = Field(50, ge=1)
    """Predictions the estimate must rest on."""


class DriftRule(_Strict):
    """Retrain on a drift.detected event (or a drift alert) at or above this share."""

    min_share: float = Field(0.0, ge=0, le=1)


class LatencyRule(_Strict):
    """Retrain when the p99 inference latency (from Prometheus) exceeds this."""

    p99_s: float = Field(gt=0)


class ScheduleRule(_Strict):
    """Retrain on schedule: the first tick after ``cron`` came due since the last run."""

    cron: str

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, v: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(v):
            raise ValueError(f"cron: {v!r} is not a valid cron expression")
        return v


class Triggers(_Strict):
    feedback_volume: FeedbackVolumeRule | None = None
    quality: QualityRule | None = None
    estimated_quality_below: EstimatedQualityRule | None = None
    drift: DriftRule | None = None
    latency: LatencyRule | None = None
    schedule: ScheduleRule | None = None


class Limits(_Strict):
    cooldown_s: float = Field(600.0, ge=0)
    """No new run within this long after the last one started (failed runs included)."""
    failure_backoff_s: float = Field(300.0, ge=0)
    """After k failed runs in a row the cooldown is at least this times 2^(k-1)..."""
    max_failure_backoff_s: float = Field(6 * 3600.0, ge=0)
    """...but never longer than this."""
    dedup_window_s: float = Field(3600.0, ge=0)
    """The same triggering event (source, id) seen again within this long is ignored."""
    max_concurrent: int = Field(1, ge=1)


class Training(_Strict):
    backend: Literal["local", "kubernetes", "airflow", "kubeflow"] = "local"
    params: dict[str, Any] = Field(default_factory=dict)
    """Trainer parameters (merged over the trainer's defaults)."""
    recent_share: float = Field(0.3, gt=0, lt=1)
    """Newest share of labeled feedback held out as the 'recent' evaluation set."""
    timeout_s: float = Field(900.0, gt=0)
    min_feedback_rows: int = Field(1, ge=0)
    """A run with fewer usable labeled rows is ``skipped`` (with the reason and counts)
    instead of training the base data again; 0 trains on the base data alone."""


class Bandit(_Strict):
    """Reward-driven serving (``mode: bandit``): Thompson sampling over the versions."""

    reward: Literal["binary", "continuous"] = "binary"
    """binary: rewards 0/1 (Beta posterior); continuous: any number (Normal posterior)."""
    floor: float = Field(0.05, ge=0, le=0.5)
    """Every version keeps at least this share of traffic (exploration)."""
    threshold: float = Field(0.95, gt=0.5, lt=1)
    """A version whose posterior probability of being best exceeds this wins."""
    min_rewards: int = Field(20, ge=1)
    """Rewards every version needs before a winner is declared."""
    refresh_s: float = Field(1.0, gt=0)
    """How often rewards are read and the weights recomputed."""
    max_s: float = Field(3600.0, gt=0)
    """Without a winner by then, the challenger is rolled back (no evidence it is better)."""


class Shadow(_Strict):
    """A shadow stage before the canary: requests mirrored to the challenger, its
    answers recorded (``shadow: true``) and compared, never returned."""

    duration_s: float = Field(60.0, ge=0)
    min_requests: int = Field(50, ge=1)
    """Mirrored requests the challenger must have answered to judge agreement."""
    min_agreement: float = Field(0.0, ge=0, le=1)
    """Share of mirrored requests where challenger and champion answer alike."""
    min_labeled: int = Field(0, ge=0)
    """Labeled mirrored requests needed to judge quality (0: quality not required)."""
    max_quality_drop: float = Field(0.02, ge=0)


class Promotion(_Strict):
    margin: float = 0.0
    """The challenger must beat the champion by at least this on the gate data."""
    max_holdout_drop: float = Field(0.05, ge=0)
    """...and may lose at most this much on the base holdout."""
    canary_weight: float = Field(0.2, gt=0, le=1)
    bake_s: float = Field(60.0, ge=0)
    poll_s: float = Field(2.0, gt=0)
    min_canary_samples: int = Field(20, ge=0)
    max_error_rate: float = Field(0.05, ge=0, le=1)
    max_latency_ratio: float = Field(2.0, gt=0)
    """Challenger p99 over champion p99 above this rolls back..."""
    latency_slack_s: float = Field(0.05, ge=0)
    """...when it is also this much slower in absolute terms (a few ms never count)."""
    min_latency_requests: int = Field(50, ge=1)
    """Challenger requests before its p99 is judged (a p99 of a handful is its maximum)."""
    min_scrape_coverage: float = Field(0.8, ge=0, le=1)
    """Share of the bake's scrape intervals Prometheus must have scraped the model server
    in (a version's request counter sampled); less is missing evidence: a gap hides the
    errors and latency of its time. 0: not required."""
    max_quality_drop: float = Field(0.02, ge=0)
    """Challenger quality worse than the champion's by more than this rolls back."""
    max_estimated_quality_drop: float | None = Field(None, ge=0)
    """Set: the guard also requires the estimated quality (from confidences, before labels)
    of both versions, and rolls back when the challenger's is worse by more than this; a
    missing estimate is missing evidence (fail closed)."""
    min_estimated_samples: int = Field(20, ge=1)
    """Predictions each version's estimate must rest on for the guard to judge it."""
    auto: bool = True
    """False: stop after the offline gate (ops promote by hand)."""
    mode: Literal["canary", "bandit"] = "canary"
    """canary: a fixed share for the bake; bandit: shares follow the rewards (``bandit``)."""
    bandit: Bandit = Field(default_factory=Bandit)
    shadow: Shadow | None = None
    """Set: shadow, then canary (or bandit), then promotion."""
    routing: Literal["local", "seldon"] = "local"
    """local: the routing record in the blob store; seldon: a Seldon Core v2 Experiment."""


class Policy(_Strict):
    """A model's retrain and promotion policy."""

    model: str
    triggers: Triggers = Field(default_factory=Triggers)
    limits: Limits = Field(default_factory=Limits)
    training: Training = Field(default_factory=Training)
    promotion: Promotion = Field(default_factory=Promotion)
    inputs: InputLogging = Field(default_factory=InputLogging)
    """Which answered inputs are kept for training, how large, how long
    (``driftloop.inputlog``)."""

    @field_validator("model")
    @classmethod
    def _safe(cls, v: str) -> str:
        safe_segment(v, field="model")
        return v

    @property
    def higher_is_better(self) -> bool:
        spec = FAMILIES.get(self.model)
        return spec.higher_is_better if spec else True

    @property
    def metric(self) -> str:
        if self.triggers.quality and self.triggers.quality.metric:
            return self.triggers.quality.metric
        spec = FAMILIES.get(self.model)
        return spec.metric if spec else "accuracy"


def parse_policy(doc: Any, *, where: str = "policy") -> Policy:
    """A policy from its YAML document; every broken field named at once."""
    try:
        return Policy.model_validate(doc)
    except ValidationError as e:
        raise ValidationFailed(pydantic_field_errors(e, prefix=where)) from e


def load_policy(directory: Path, model: str) -> Policy:
    """``<directory>/<model>.yaml``; ``NotFound`` when the model has no policy."""
    path = directory / f"{safe_segment(model, field='model')}.yaml"
    try:
        text = path.read_text()
    except FileNotFoundError as e:
        raise NotFound(f"model {model!r} has no policy ({path})") from e
    try:
        doc = strict_yaml.load(text)
    except yaml.YAMLError as e:
        raise ValidationFailed([FieldError(path.name, "yaml", str(e))]) from e
    policy = parse_policy(doc, where=path.name)
    if policy.model != model:
        raise ValidationFailed([FieldError(f"{path.name}.model", "matches file name",
                                           f"policy names {policy.model!r}, file {model!r}")])
    return policy


def policy_models(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yaml"))


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Signals:
    """What is known about a model when a trigger arrives (gathered by the caller)."""

    model: str
    now: datetime
    trigger: str
    """What woke the policy: drift, schedule, feedback, alert:<name>, manual."""
    event_key: str | None = None
    """(source, id) of the triggering event, for de-duplication."""
    feedback_since_training: int | None = None
    quality: float | None = None
    quality_samples: int | None = None
    estimated_quality: float | None = None
    """Quality estimated from the champion's confidences (``driftloop_quality_estimated``)."""
    estimated_quality_samples: int | None = None
    drift_share: float | None = None
    drift_detected: bool = False
    latency_p99_s: float | None = None
    schedule_tick: bool = False
    manual: bool = False
    alerts: frozenset[str] = frozenset()
    """``trigger`` labels of firing Alertmanager alerts (quality, drift, latency, ...)."""


@dataclass(frozen=True)
class RunHistory:
    """The run-state store's view of a model's runs (see ``driftloop.retrain.state``)."""

    last_started: datetime | None = None
    """Start of the newest run, whatever its outcome (a failed run starts the cooldown)."""
    active: int = 0
    seen_events: frozenset[str] = frozenset()
    consecutive_failures: int = 0
    """Failed runs since the last one that did not fail (they lengthen the cooldown)."""
    generation: int = 0
    """Runs started so far through the shared start sequence (the next start claims +1)."""


@dataclass(frozen=True)
class RuleResult:
    """One rule's verdict, with the values it compared."""

    rule: str
    fired: bool
    value: Any = None
    threshold: Any = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Decision:
    """Whether to retrain now and why: every rule evaluated, what fired, what blocked."""

    model: str
    retrain: bool
    rules: tuple[RuleResult, ...]
    blocked_by: str | None = None
    detail: str = ""
    at: str = ""
    trigger: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fired(self) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.rules if r.fired)

    def reasons(self) -> list[dict[str, Any]]:
        """The fired rules as JSON (what retrain.requested carries)."""
        return [r.to_dict() for r in self.fired]

    def explain(self) -> str:
        fired = ", ".join(f"{r.rule} ({r.detail})" for r in self.fired) or "no rule fired"
        if self.retrain:
            return f"retrain {self.model}: {fired}"
        if self.blocked_by:
            return f"no retrain of {self.model}: {fired}, but {self.blocked_by}: {self.detail}"
        return f"no retrain of {self.model}: {fired}"

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "retrain": self.retrain, "trigger": self.trigger,
                "at": self.at, "blocked_by": self.blocked_by, "detail": self.detail,
                "explain": self.explain(), "rules": [r.to_dict() for r in self.rules]}


def _worse(value: float, threshold: float, higher_is_better: bool) -> bool:
    return value < threshold if higher_is_better else value > threshold


def evaluate_rules(policy: Policy, s: Signals, history: RunHistory) -> tuple[RuleResult, ...]:
    """Every configured rule against the signals (pure)."""
    t = policy.triggers
    out: list[RuleResult] = []
    if s.manual:
        out.append(RuleResult("manual", True, detail="requested by hand"))
    if t.feedback_volume is not None:
        n = s.feedback_since_training
        fired = n is not None and n >= t.feedback_volume.min_events
        out.append(RuleResult("feedback_volume", fired, n, t.feedback_volume.min_events,
                              f"{n} feedback events since the last training, "
                              f"threshold {t.feedback_volume.min_events}"))
    if t.quality is not None:
        q, n = s.quality, s.quality_samples
        enough = n is not None and n >= t.quality.min_samples
        fired = q is not None and enough and _worse(q, t.quality.threshold,
                                                     policy.higher_is_better)
        op = "<" if policy.higher_is_better else ">"
        if "quality" in s.alerts and not fired:
            fired = q is None or not enough or _worse(q, t.quality.threshold,
                                                      policy.higher_is_better)
        if "quality" in s.alerts and q is None:
            why = "quality alert firing (threshold and sample count checked by the alert rule)"
        elif q is None:
            why = "no quality measured"
        elif not enough:
            why = f"{policy.metric}={q:.4g} on {n} samples, needs {t.quality.min_samples}"
        else:
            why = f"{policy.metric}={q:.4g} on {n} samples, fires when {op} {t.quality.threshold}"
        out.append(RuleResult("quality", fired, q, t.quality.threshold, why))
    if t.estimated_quality_below is not None:
        out.append(_estimated_rule(policy, t.estimated_quality_below, s))
    if t.drift is not None:
        share = s.drift_share
        detected = s.drift_detected or "drift" in s.alerts
        fired = detected and (share is None or share >= t.drift.min_share)
        why = (f"drift detected, share of drifted features {share}" if detected
               else "no drift reported")
        out.append(RuleResult("drift", fired, share, t.drift.min_share, why))
    if t.latency is not None:
        p99 = s.latency_p99_s
        fired = (p99 is not None and p99 > t.latency.p99_s) or (
            p99 is None and "latency" in s.alerts)
        why = ("latency alert firing" if p99 is None and "latency" in s.alerts
               else "no latency measured" if p99 is None
               else f"p99 {p99:.3f}s vs {t.latency.p99_s}s")
        out.append(RuleResult("latency", fired, p99, t.latency.p99_s, why))
    if t.schedule is not None:
        fired, why = _schedule_due(t.schedule.cron, s, history)
        out.append(RuleResult("schedule", fired, s.now.isoformat(), t.schedule.cron, why))
    return tuple(out)


def _estimated_rule(policy: Policy, rule: EstimatedQualityRule, s: Signals) -> RuleResult:
    q, n = s.estimated_quality, s.estimated_quality_samples
    op = "<" if policy.higher_is_better else ">"
    if "estimated_quality" in s.alerts and q is None:
        return RuleResult("estimated_quality", True, q, rule.threshold,
                          "estimated-quality alert firing (checked by the alert rule)")
    if q is None:
        return RuleResult("estimated_quality", False, q, rule.threshold,
                          "no quality estimated")
    if n is None or n < rule.min_samples:
        return RuleResult("estimated_quality", False, q, rule.threshold,
                          f"estimated {policy.metric}={q:.4g} on {n or 0} predictions, "
                          f"needs {rule.min_samples}")
    fired = _worse(q, rule.threshold, policy.higher_is_better)
    return RuleResult("estimated_quality", fired, q, rule.threshold,
                      f"estimated {policy.metric}={q:.4g} on {n} predictions, fires when "
                      f"{op} {rule.threshold}")


def _schedule_due(cron: str, s: Signals, history: RunHistory) -> tuple[bool, str]:
    from croniter import croniter

    if not s.schedule_tick:
        return False, "not a schedule tick"
    if history.last_started is None:
        return True, "schedule tick and no run yet"
    due = croniter(cron, history.last_started).get_next(datetime)
    if due.tzinfo is None:
        due = due.replace(tzinfo=UTC)
    if s.now >= due:
        return True, f"due since {due.isoformat()} (last run {history.last_started.isoformat()})"
    return False, f"next due {due.isoformat()}"


def decide(policy: Policy, s: Signals, history: RunHistory) -> Decision:
    """Retrain or not, with the reasons (pure: the caller records the outcome)."""
    rules = evaluate_rules(policy, s, history)
    base = Decision(model=policy.model, retrain=False, rules=rules, at=s.now.isoformat(),
                    trigger=s.trigger)
    if not any(r.fired for r in rules):
        return base
    if s.event_key is not None and s.event_key in history.seen_events:
        return replace(base, blocked_by="duplicate",
                       detail=f"event {s.event_key!r} was already handled")
    if history.active >= policy.limits.max_concurrent:
        return replace(base, blocked_by="concurrency",
                       detail=f"{history.active} run(s) active, cap "
                       f"{policy.limits.max_concurrent}")
    if history.last_started is not None and not s.manual:
        cooldown = cooldown_s(policy, history.consecutive_failures)
        ends = history.last_started + timedelta(seconds=cooldown)
        if s.now < ends:
            left = (ends - s.now).total_seconds()
            failed = (f" after {history.consecutive_failures} failed run(s) in a row"
                      if history.consecutive_failures else "")
            return replace(base, blocked_by="cooldown",
                           detail=f"last run started {history.last_started.isoformat()}, "
                           f"cooldown {cooldown:.0f}s{failed} ({left:.0f}s left)")
    return replace(base, retrain=True)


def cooldown_s(policy: Policy, consecutive_failures: int) -> float:
    """The cooldown after the last run: longer, doubling, while runs keep failing."""
    limits = policy.limits
    if consecutive_failures <= 0:
        return limits.cooldown_s
    backoff = limits.failure_backoff_s * 2.0 ** min(consecutive_failures - 1, 30)
    return max(limits.cooldown_s, min(backoff, limits.max_failure_backoff_s))
