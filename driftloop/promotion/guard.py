"""The bake-period guard: challenger against champion on live metrics.

``observe`` reads per-version figures: requests, errors and p99 latency from Prometheus
(MLServer's driftloop_model_* series), quality from Prometheus (``driftloop_quality``,
pushed by drift-check) or, where that has no per-version figure yet, from the labeled
records on ``driftloop.labeled`` since the canary started. ``judge`` is pure.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from driftloop.errors import DriftloopError
from driftloop.policy import Policy
from driftloop.settings import Settings

log = logging.getLogger("driftloop.promotion")


@dataclass(frozen=True)
class VersionStats:
    version: str
    requests: float | None = None
    errors: float | None = None
    p99_s: float | None = None
    quality: float | None = None
    samples: int = 0

    @property
    def error_rate(self) -> float | None:
        if not self.requests:
            return None
        return (self.errors or 0.0) / self.requests


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    value: Any
    limit: Any
    detail: str


@dataclass(frozen=True)
class GuardVerdict:
    verdict: Literal["ok", "rollback", "wait"]
    checks: tuple[Check, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "checks": [asdict(c) for c in self.checks]}

    def explain(self) -> str:
        return "; ".join(f"{c.name}: {c.detail}" for c in self.checks)


def judge(policy: Policy, champion: VersionStats, challenger: VersionStats, *,
          final: bool) -> GuardVerdict:
    """'rollback' as soon as a check fails; 'ok' at the end when quality was judged;
    'wait' while there is not enough evidence yet."""
    p = policy.promotion
    checks: list[Check] = []
    er = challenger.error_rate
    judged_errors = er is not None and (challenger.requests or 0) >= p.min_canary_samples
    checks.append(Check("error_rate", not judged_errors or er <= p.max_error_rate,  # type: ignore[operator]
                        er, p.max_error_rate,
                        "no requests counted" if er is None else
                        f"challenger {er:.3%} (limit {p.max_error_rate:.1%})"))
    if challenger.p99_s and champion.p99_s and (challenger.requests or 0) >= \
            p.min_latency_requests:
        ratio = challenger.p99_s / champion.p99_s
        slower = challenger.p99_s - champion.p99_s
        ok = ratio <= p.max_latency_ratio or slower <= p.latency_slack_s
        checks.append(Check("latency", ok, ratio, p.max_latency_ratio,
                            f"p99 {challenger.p99_s * 1000:.1f} ms vs {champion.p99_s * 1000:.1f}"
                            f" ms (ratio {ratio:.2f}, limit {p.max_latency_ratio})"))
    enough = challenger.samples >= p.min_canary_samples and challenger.quality is not None
    if enough and champion.quality is not None:
        sign = 1.0 if policy.higher_is_better else -1.0
        drop = sign * (champion.quality - challenger.quality)  # type: ignore[operator]
        checks.append(Check("quality", drop <= p.max_quality_drop, drop, p.max_quality_drop,
                            f"{policy.metric} challenger {challenger.quality:.4f} "
                            f"({challenger.samples} samples) vs champion "
                            f"{champion.quality:.4f} ({champion.samples})"))
    elif enough:
        checks.append(Check("quality", True, challenger.quality, None,
                            f"challenger {challenger.quality:.4f}; champion has no quality"))
    else:
        checks.append(Check("quality", not final or p.min_canary_samples == 0, challenger.samples,
                            p.min_canary_samples,
                            f"{challenger.samples} labeled challenger samples, needs "
                            f"{p.min_canary_samples}"))
    if any(not c.ok for c in checks):
        return GuardVerdict("rollback", tuple(checks))
    judged = enough or p.min_canary_samples == 0
    return GuardVerdict("ok" if final and judged else "wait", tuple(checks))


class Observer:
    """Per-version live figures since the canary started."""

    def __init__(self, settings: Settings, model: str, metric: str, since_ms: int) -> None:
        self.settings, self.model, self.metric, self.since_ms = settings, model, metric, since_ms

    def observe(self, versions: list[str]) -> dict[str, VersionStats]:
        prom = self._prometheus(versions)
        labeled = self._labeled(versions)
        out = {}
        for v in versions:
            p, lab = prom.get(v, {}), labeled.get(v)
            quality, samples = (lab if lab else (p.get("quality"), int(p.get("samples") or 0)))
            out[v] = VersionStats(v, p.get("requests"), p.get("errors"), p.get("p99"),
                                  quality, samples)
        return out

    def _prometheus(self, versions: list[str]) -> dict[str, dict[str, float]]:
        from driftloop.monitoring.prom import PrometheusClient

        m = self.model
        window = max(int((self._now_ms() - self.since_ms) / 1000) + 1, 10)
        queries = {
            "requests": "sum by (version) (increase("
                        f'driftloop_model_requests_total{{model="{m}"}}[{window}s]))',
            "errors": "sum by (version) (increase("
                      f'driftloop_model_errors_total{{model="{m}"}}[{window}s]))',
            "p99": "histogram_quantile(0.99, sum by (version, le) (rate("
                   f'driftloop_model_latency_seconds_bucket{{model="{m}"}}[{window}s])))',
        }
        out: dict[str, dict[str, float]] = {}
        client = PrometheusClient(self.settings.resolved_prometheus_url, timeout_s=2.0)
        try:
            for name, q in queries.items():
                for s in client.query(q):
                    if math.isfinite(s.value):
                        out.setdefault(s.labels.get("version", ""), {})[name] = s.value
        except DriftloopError as e:
            log.debug("Prometheus not available for the bake of %s: %s", m, e)
        finally:
            client.close()
        return out

    def _labeled(self, versions: list[str]) -> dict[str, tuple[float, int]]:
        from driftloop import topics
        from driftloop.monitoring.quality import aggregate
        from driftloop.monitoring.window import read_topic

        try:
            window_s = max((self._now_ms() - self.since_ms) / 1000.0, 1.0)
            w = read_topic(self.settings, topics.LABELED, window_s=window_s,
                           max_records=self.settings.drift_window_max_records, model=self.model)
        except Exception as e:  # Kafka unavailable: the bake waits (and times out) instead
            log.warning("labeled records of %s unavailable: %s", self.model, e)
            return {}
        stats = aggregate([r.data for r in w.records], model=self.model)
        return {s.version: (s.mean, s.count) for s in stats
                if s.metric == self.metric and s.version in versions}

    @staticmethod
    def _now_ms() -> int:
        import time

        return int(time.time() * 1000)
