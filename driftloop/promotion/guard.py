"""The bake-period guard: challenger against champion on live metrics.

``observe`` reads per-version figures: requests, errors and p99 latency from Prometheus
(MLServer's driftloop_model_* series), quality from Prometheus (``driftloop_quality``,
pushed by drift-check; the estimate before labels, ``driftloop_quality_estimated``, when
the policy requires it) or, where that has no per-version figure yet, from the labeled
records on ``driftloop.labeled`` since the canary started. ``judge`` is pure and fails
closed: a figure that cannot be read is missing evidence, never a pass. Prometheus
figures since the canary started say nothing of a time it did not scrape, so the guard
also requires its scrapes across the bake (``scrape_coverage``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
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
    estimated: float | None = None
    """Quality estimated from the version's confidences (``driftloop_quality_estimated``)."""
    estimated_samples: int = 0
    scrape_coverage: float | None = None
    """Share of the bake's scrape intervals with a sample of this version's request
    counter (``Observer``); None: not readable."""

    @property
    def error_rate(self) -> float | None:
        if not self.requests:
            return None
        return (self.errors or 0.0) / self.requests


@dataclass(frozen=True)
class Check:
    """One guard check. ``judged`` False: not enough evidence to decide it yet."""

    name: str
    ok: bool
    value: Any
    limit: Any
    detail: str
    judged: bool = True


@dataclass(frozen=True)
class GuardVerdict:
    verdict: Literal["ok", "rollback", "wait"]
    checks: tuple[Check, ...]
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reason": self.reason,
                "checks": [asdict(c) for c in self.checks]}

    def explain(self) -> str:
        return "; ".join(f"{c.name}: {c.detail}" for c in self.checks)


def _missing(name: str, value: Any, limit: Any, detail: str) -> Check:
    return Check(name, False, value, limit, detail, judged=False)


def _with(detail: str, why: str | None) -> str:
    return f"{detail} ({why})" if why else detail


def judge(policy: Policy, champion: VersionStats, challenger: VersionStats, *,
          final: bool, expired: bool = False,
          unavailable: Mapping[str, str] | None = None, quality: bool = True,
          coverage: bool = True) -> GuardVerdict:
    """Fail closed: no evidence, no pass.

    'rollback' as soon as a judged check fails, or when evidence is still missing at
    ``expired`` (the end of the bake plus its grace period): reason "no evidence: ...";
    'ok' at the end of the bake (``final``) when every check was judged and passed;
    'wait' otherwise, with the reason. ``unavailable`` says why a source gave nothing
    (``metrics``: Prometheus, ``labeled``: the labeled records). ``quality=False`` leaves
    the labeled-quality check out (a bandit judges by rewards) and nothing else;
    ``coverage=False`` the scrape coverage check (a bandit has no bake window to cover).
    """
    p = policy.promotion
    why = dict(unavailable or {})
    v = challenger.version
    checks: list[Check] = []
    need = max(p.min_canary_samples, 1)
    er = challenger.error_rate
    if challenger.requests is None:
        checks.append(_missing("error_rate", None, p.max_error_rate, _with(
            f"no request metrics for v{v}", why.get("metrics") or
            "Prometheus has no driftloop_model_requests_total series for it: none served, "
            "or the model server is not scraped")))
    elif challenger.requests < need or er is None:
        checks.append(_missing("error_rate", challenger.requests, need,
                               f"{challenger.requests:.0f} challenger requests counted, "
                               f"needs {need}"))
    else:
        checks.append(Check("error_rate", er <= p.max_error_rate, er, p.max_error_rate,
                            f"challenger {er:.3%} of {challenger.requests:.0f} requests "
                            f"(limit {p.max_error_rate:.1%})"))
    if challenger.requests is None or challenger.requests < p.min_latency_requests:
        n = "no" if challenger.requests is None else f"{challenger.requests:.0f}"
        checks.append(_missing("latency", challenger.requests, p.min_latency_requests, _with(
            f"{n} challenger requests, needs {p.min_latency_requests} to judge p99",
            why.get("metrics"))))
    elif challenger.p99_s is None or champion.p99_s is None:
        which = " and ".join(f"v{s.version}" for s in (challenger, champion) if s.p99_s is None)
        checks.append(_missing("latency", None, p.max_latency_ratio, _with(
            f"no p99 latency for {which}", why.get("metrics"))))
    else:
        ratio = challenger.p99_s / champion.p99_s if champion.p99_s > 0 else math.inf
        slower = challenger.p99_s - champion.p99_s
        ok = ratio <= p.max_latency_ratio or slower <= p.latency_slack_s
        checks.append(Check("latency", ok, ratio, p.max_latency_ratio,
                            f"p99 {challenger.p99_s * 1000:.1f} ms vs {champion.p99_s * 1000:.1f}"
                            f" ms (ratio {ratio:.2f}, limit {p.max_latency_ratio})"))
    if quality and p.min_canary_samples == 0:
        checks.append(Check("quality", True, challenger.quality, None,
                            "not required (min_canary_samples is 0)"))
    elif quality:
        short = [s for s in (challenger, champion)
                 if s.quality is None or s.samples < p.min_canary_samples]
        if short:
            detail = "; ".join(f"{s.samples} labeled v{s.version} samples, needs "
                               f"{p.min_canary_samples}" for s in short)
            checks.append(_missing("quality", challenger.samples, p.min_canary_samples,
                                   _with(detail, why.get("labeled"))))
        else:
            sign = 1.0 if policy.higher_is_better else -1.0
            drop = sign * (champion.quality - challenger.quality)  # type: ignore[operator]
            checks.append(Check("quality", drop <= p.max_quality_drop, drop,
                                p.max_quality_drop,
                                f"{policy.metric} challenger {challenger.quality:.4f} "
                                f"({challenger.samples} samples) vs champion "
                                f"{champion.quality:.4f} ({champion.samples})"))
    if p.max_estimated_quality_drop is not None:
        checks.append(_estimated_check(policy, champion, challenger, why.get("metrics")))
    if coverage:
        checks.append(_coverage_check(policy, champion, challenger, why.get("metrics")))
    failed = [c for c in checks if c.judged and not c.ok]
    missing = [c for c in checks if not c.judged]
    if failed:
        return GuardVerdict("rollback", tuple(checks), "canary failed: " + "; ".join(
            f"{c.name}: {c.detail}" for c in failed))
    if missing:
        what = "; ".join(f"{c.name}: {c.detail}" for c in missing)
        if expired:
            return GuardVerdict("rollback", tuple(checks), f"no evidence: {what}")
        return GuardVerdict("wait", tuple(checks), f"waiting for evidence: {what}")
    if final:
        return GuardVerdict("ok", tuple(checks), f"canary passed: {_explain(checks)}")
    return GuardVerdict("wait", tuple(checks), "baking: every check passes so far")


def _estimated_check(policy: Policy, champion: VersionStats, challenger: VersionStats,
                     why: str | None) -> Check:
    """Estimated quality, challenger against champion; required by the policy, so a
    missing or thin estimate is missing evidence (never a pass)."""
    p = policy.promotion
    limit = p.max_estimated_quality_drop
    short = [s for s in (challenger, champion)
             if s.estimated is None or s.estimated_samples < p.min_estimated_samples]
    if short:
        detail = "; ".join(
            f"no estimated quality for v{s.version}" if s.estimated is None else
            f"v{s.version}'s estimate rests on {s.estimated_samples} predictions, needs "
            f"{p.min_estimated_samples}" for s in short)
        return _missing("estimated_quality", challenger.estimated, limit, _with(detail, why))
    sign = 1.0 if policy.higher_is_better else -1.0
    drop = sign * (champion.estimated - challenger.estimated)  # type: ignore[operator]
    return Check("estimated_quality", drop <= (limit or 0.0), drop, limit,
                 f"estimated {policy.metric} challenger {challenger.estimated:.4f} vs champion "
                 f"{champion.estimated:.4f}")


def _coverage_check(policy: Policy, champion: VersionStats, challenger: VersionStats,
                    why: str | None) -> Check:
    """How much of the bake Prometheus scraped: the best-covered version's share. Both
    versions are answered by the same scrape targets; the champion's counter usually
    predates the canary, the challenger's appears with its first answer. Below the
    policy's limit, or unreadable, it is missing evidence: the increases the other checks
    judge would otherwise pass over a gap as if nothing happened in it."""
    limit = policy.promotion.min_scrape_coverage
    read = [s for s in (challenger, champion) if s.scrape_coverage is not None]
    best = max(read, key=lambda s: s.scrape_coverage or 0.0) if read else None
    value = best.scrape_coverage if best else None
    if limit == 0:
        return Check("scrape_coverage", True, value, limit,
                     "not required (min_scrape_coverage is 0)")
    if best is None or value is None:
        return _missing("scrape_coverage", None, limit, _with(
            f"no scrape coverage for v{challenger.version} or v{champion.version}", why or
            "Prometheus has no driftloop_model_requests_total samples of either in the bake"))
    detail = (f"Prometheus scraped {value:.0%} of the bake (v{best.version}'s requests; "
              f"limit {limit:.0%})")
    if value < limit:
        return _missing("scrape_coverage", value, limit, detail)
    return Check("scrape_coverage", True, value, limit, detail)


def _explain(checks: list[Check]) -> str:
    return "; ".join(f"{c.name}: {c.detail}" for c in checks)


@dataclass(frozen=True)
class Observation:
    """Per-version figures, and why a source gave nothing (``metrics``, ``labeled``)."""

    stats: dict[str, VersionStats]
    unavailable: dict[str, str]


COVERAGE_SLACK_INTERVALS = 2
"""Scrape intervals a fully scraped bake may still miss: the first scrape after the canary
started comes up to one interval later (scrapes keep their own phase), and the last one
may not be stored yet when the bake's end is now."""


class Observer:
    """Per-version live figures since the canary started. ``until_ms``: the end of the
    bake, the last moment whose scrapes count toward the coverage (None: now)."""

    def __init__(self, settings: Settings, model: str, metric: str, since_ms: int,
                 until_ms: int | None = None) -> None:
        self.settings, self.model, self.metric, self.since_ms = settings, model, metric, since_ms
        self.until_ms = until_ms

    def observe(self, versions: list[str], *, with_quality: bool = True) -> Observation:
        """``with_quality`` False: Prometheus figures only (the bandit judges by rewards)."""
        unavailable: dict[str, str] = {}
        now_ms = self._now_ms()
        prom = self._prometheus(versions, unavailable, now_ms)
        labeled = self._labeled(versions, unavailable) if with_quality else {}
        out = {}
        for v in versions:
            p, lab = prom.get(v, {}), labeled.get(v)
            quality, samples = (lab if lab else (p.get("quality"), int(p.get("samples") or 0)))
            out[v] = VersionStats(v, p.get("requests"), p.get("errors"), p.get("p99"),
                                  quality, samples, p.get("estimated"),
                                  int(p.get("estimated_samples") or 0),
                                  self._coverage(p.get("scrapes"), now_ms))
        return Observation(out, unavailable)

    def _prometheus(self, versions: list[str], unavailable: dict[str, str],
                    now_ms: int) -> dict[str, dict[str, float]]:
        """Requests, errors and p99 per version since the canary started, and the samples
        of its request counter in the bake (``scrapes``: counted per series, the best
        series per version, so more outcomes or replicas never raise it). A series that
        is absent stays absent (None), never zero: the guard then waits for evidence."""
        from driftloop.monitoring.prom import PrometheusClient

        m = self.model
        window = max(int((now_ms - self.since_ms) / 1000) + 1, 10)
        end_ms = self._bake_end(now_ms)
        span_ms = max(end_ms - self.since_ms, 1)
        queries = {
            "requests": "sum by (version) (increase("
                        f'driftloop_model_requests_total{{model="{m}"}}[{window}s]))',
            "errors": "sum by (version) (increase("
                      f'driftloop_model_errors_total{{model="{m}"}}[{window}s]))',
            "p99": "histogram_quantile(0.99, sum by (version, le) (rate("
                   f'driftloop_model_latency_seconds_bucket{{model="{m}"}}[{window}s])))',
            "estimated": f'max by (version) (driftloop_quality_estimated{{model="{m}"}})',
            "estimated_samples": "max by (version) ("
                                 f'driftloop_quality_estimated_samples{{model="{m}"}})',
            "scrapes": "max by (version) (count_over_time("
                       f'driftloop_model_requests_total{{model="{m}"}}[{span_ms}ms] '
                       f"@ {end_ms / 1000:.3f}))",
        }
        out: dict[str, dict[str, float]] = {}
        client = PrometheusClient(self.settings.resolved_prometheus_url, timeout_s=2.0)
        try:
            for name, q in queries.items():
                for s in client.query(q):
                    if math.isfinite(s.value):
                        out.setdefault(s.labels.get("version", ""), {})[name] = s.value
        except DriftloopError as e:
            log.warning("Prometheus not available for the bake of %s: %s", m, e)
            unavailable["metrics"] = str(e)[:300]
        finally:
            client.close()
        return out

    def _bake_end(self, now_ms: int) -> int:
        return now_ms if self.until_ms is None else min(now_ms, self.until_ms)

    def _coverage(self, scrapes: float | None, now_ms: int) -> float | None:
        """Samples of the bake so far over the scrapes Prometheus would have taken in it
        (``scrape_interval_s``, which must be the interval it scrapes the model server
        at), less ``COVERAGE_SLACK_INTERVALS``; at most 1."""
        if scrapes is None:
            return None
        span_s = (self._bake_end(now_ms) - self.since_ms) / 1000.0
        expected = span_s / self.settings.scrape_interval_s - COVERAGE_SLACK_INTERVALS
        return min(scrapes / max(expected, 1.0), 1.0)

    def _labeled(self, versions: list[str],
                 unavailable: dict[str, str]) -> dict[str, tuple[float, int]]:
        from driftloop import topics
        from driftloop.monitoring.quality import aggregate
        from driftloop.monitoring.window import read_topic

        try:
            w = read_topic(self.settings, topics.LABELED, since_ms=self.since_ms,
                           max_records=self.settings.drift_window_max_records, model=self.model)
        except Exception as e:  # Kafka unavailable: the bake waits (and times out) instead
            log.warning("labeled records of %s unavailable: %s", self.model, e)
            unavailable["labeled"] = f"labeled records unavailable: {e}"[:300]
            return {}
        stats = aggregate([r.data for r in w.records], model=self.model)
        return {s.version: (s.mean, s.count) for s in stats
                if s.metric == self.metric and s.version in versions}

    @staticmethod
    def _now_ms() -> int:
        import time

        return int(time.time() * 1000)
