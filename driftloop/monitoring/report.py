"""``driftloop report``: one self-contained HTML page about a model's loop.

It holds the drift table, each drifted feature's reference vs current distribution, quality
over time (with the estimated quality beside it when an estimator has written any), the
promotion history with the bake's verdicts and the bandit's routing weights, and the current
champion and challenger. Plots are rendered with matplotlib's Agg backend and inlined as
``data:`` PNGs, styles inline: the page loads nothing from anywhere, so it can be mailed,
archived or opened offline.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from driftloop.drift import DriftResult, NumericProfile, ReferenceProfile
from driftloop.monitoring.quality import QualityStat, over_time

if TYPE_CHECKING:
    from driftloop.blob import BlobStore

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:72em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:left}th{background:#f4f4f4}.drift{color:#b00;font-weight:bold}.ok{color:#070}
.plots{display:flex;flex-wrap:wrap;gap:1em}img{max-width:100%}.muted{color:#777}
"""


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    images: tuple[str, ...]
    """Names of the plots inlined in the page."""


@dataclass(frozen=True)
class LoopState:
    """What the loop decided about the model: aliases, routing, promotions, bake verdicts."""

    champion: str | None = None
    challenger: str | None = None
    routing: Mapping[str, Any] | None = None
    history: Sequence[Mapping[str, Any]] = ()
    verdicts: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)


def load_loop_state(store: BlobStore, model: str) -> LoopState:
    """The model's aliases, routing record, promotion history and bake verdicts (read only)."""
    from driftloop.promotion import routing
    from driftloop.registry import Registry

    aliases = Registry(store).aliases(model)
    r = routing.load(store, model)
    history = [json.loads(store.get(k)) for k in store.list(f"promotions/{model}/history/")]
    verdicts = {k.rsplit("/", 1)[-1].removesuffix(".json"): json.loads(store.get(k))
                for k in store.list(f"promotions/{model}/bake/")}
    return LoopState(aliases.get("champion"), aliases.get("challenger"),
                     r.to_dict() if r else None, history, verdicts)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _img(png: bytes, alt: str) -> str:
    return (f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}" '
            f'alt="{html.escape(alt)}">')


def plot_drift(result: DriftResult) -> bytes:
    """Horizontal bars: each feature's deciding statistic relative to its threshold."""
    plt = _plt()
    names = list(result.features)
    ratios = []
    for f in result.features.values():
        if f.stattype_is_p_value:
            ratios.append(f.threshold / max(f.value, 1e-300))
        else:
            ratios.append(f.value / f.threshold if f.threshold else float(f.value > 0))
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.5))
    colors = ["#d62728" if f.drifted else "#2ca02c" for f in result.features.values()]
    y = np.arange(len(names))
    ax.barh(y, np.minimum(ratios, 10.0), color=colors)
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1, label="threshold")
    ax.set_yticks(y, [f"{n} ({f.statistic})" for n, f in result.features.items()])
    ax.set_xlabel("statistic / threshold (p-values: threshold / p), capped at 10")
    ax.set_title(f"Drift per feature - share drifted {result.share_drifted:.0%}")
    ax.invert_yaxis()
    ax.legend(loc="lower right")
    return _png(fig)


def plot_distribution(name: str, ref: NumericProfile, current: np.ndarray) -> bytes:
    """Reference vs current histogram of one numeric feature (reference from its sample)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    lo = float(min(ref.sample.min(), current.min()))
    hi = float(max(ref.sample.max(), current.max()))
    bins = np.linspace(lo, hi if hi > lo else lo + 1, 40)
    ax.hist(ref.sample, bins=bins, density=True, alpha=0.5, label="reference")
    ax.hist(current, bins=bins, density=True, alpha=0.5, label="current")
    ax.set_title(name)
    ax.legend()
    return _png(fig)


def plot_quality(points: Sequence[tuple[datetime, QualityStat]],
                 estimated: Sequence[tuple[datetime, QualityStat]] = ()) -> bytes:
    """Mean quality per time bucket, one line per (version, metric); estimates dashed."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for pts, style, what in ((points, "-", ""), (estimated, "--", " (estimated)")):
        series: dict[tuple[str, str], list[tuple[datetime, float]]] = {}
        for t, s in pts:
            series.setdefault((s.version, s.metric), []).append((t, s.mean))
        for (version, metric), xs in sorted(series.items()):
            ax.plot([p[0] for p in xs], [p[1] for p in xs], style, marker="o",
                    label=f"v{version} {metric}{what}")
    if not points and not estimated:
        ax.text(0.5, 0.5, "no labeled feedback in the window", ha="center", va="center",
                transform=ax.transAxes)
    else:
        ax.legend()
    ax.set_title("Quality over time")
    ax.set_ylabel("mean")
    fig.autofmt_xdate()
    return _png(fig)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _drift_section(result: DriftResult | None, profile: ReferenceProfile,
                   current: Mapping[str, np.ndarray], max_distributions: int,
                   images: list[str]) -> list[str]:
    esc = html.escape
    if result is None:
        return ["<h2>Drift</h2><p class=muted>no current window</p>"]
    verdict = ("<span class=drift>DRIFT</span>" if result.dataset_drift
               else "<span class=ok>no dataset drift</span>")
    parts = [f"<h2>Drift: {verdict} ({result.share_drifted:.0%} of features)</h2>",
             _img(plot_drift(result), "drift per feature")]
    images.append("drift_features")
    parts.append(_table(
        ("feature", "statistic", "value", "threshold", "drifted", "rows"),
        [(esc(n), esc(f.statistic), f"{f.value:.4g}", f"{f.threshold:.4g}",
          "<span class=drift>yes</span>" if f.drifted else "no", str(f.n_current))
         for n, f in result.features.items()]))
    drifted = [f for f in result.features.values() if f.drifted]
    plots = []
    for f in drifted[:max_distributions]:
        ref = profile.features.get(f.name)
        if isinstance(ref, NumericProfile) and f.name in current:
            plots.append(_img(plot_distribution(f.name, ref, np.asarray(current[f.name], float)),
                              f"{f.name}: reference vs current"))
            images.append(f"dist_{f.name}")
    if drifted:
        parts.append("<h3>Drifted features: reference vs current</h3>")
        parts.append(f"<div class=plots>{''.join(plots)}</div>")
        if len(drifted) > max_distributions:
            parts.append(f"<p class=muted>{len(drifted) - max_distributions} more drifted "
                         "features not plotted</p>")
    return parts


def _quality_section(labeled: Sequence[tuple[datetime, Mapping[str, Any]]],
                     quality: Sequence[QualityStat], estimated: Sequence[QualityStat],
                     model: str, images: list[str]) -> list[str]:
    span = [t for t, _ in labeled]
    bucket = max((max(span) - min(span)).total_seconds() / 20, 60.0) if span else 3600.0
    # the estimate is of the window's predictions: one point at the window's end
    at = max(span) if span else datetime.now(UTC)
    parts = ["<h2>Quality</h2>",
             _img(plot_quality(over_time(labeled, model=model, bucket_s=bucket),
                               [(at, e) for e in estimated]),
                  "quality over time")]
    images.append("quality_over_time")
    est = {(q.version, q.metric): q for q in estimated}
    if quality or estimated:
        head = ["version", "metric", "mean", "samples"]
        if est:  # the columns exist only when an estimate was made
            head += ["estimated", "predictions", "estimated - realized"]
        rows = []
        for q in quality:
            row = [f"v{html.escape(q.version)}", html.escape(q.metric), f"{q.mean:.4g}",
                   str(q.count)]
            if est:
                e = est.get((q.version, q.metric))
                row += ([f"{e.mean:.4g}", str(e.count), f"{e.mean - q.mean:+.4g}"] if e
                        else ["-", "-", "-"])
            rows.append(row)
        realized = {(q.version, q.metric) for q in quality}
        for e in estimated:  # a version with predictions but no label yet (a canary)
            if (e.version, e.metric) not in realized:
                rows.append([f"v{html.escape(e.version)}", html.escape(e.metric), "-", "0",
                             f"{e.mean:.4g}", str(e.count), "-"])
        parts.append(_table(head, rows))
    return parts


def _ts(value: Any) -> str:
    if isinstance(value, int | float) and value > 0:
        return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")
    return html.escape(str(value or "-"))


def _loop_section(loop: LoopState) -> list[str]:
    esc = html.escape
    parts = ["<h2>Champion and challenger</h2>", _table(
        ("alias", "version"),
        [("champion", esc(loop.champion or "-")), ("challenger", esc(loop.challenger or "-"))])]
    if loop.routing:
        weights = loop.routing.get("weights") or {}
        parts.append(f"<p>Routing ({esc(str(loop.routing.get('mode')))}, updated "
                     f"{_ts(loop.routing.get('updated'))}):</p>")
        parts.append(_table(("version", "share of traffic"),
                            [(f"v{esc(str(v))}", f"{float(w):.1%}")
                             for v, w in sorted(weights.items())]
                            or [(esc(str(loop.routing.get("champion"))), "100.0%")]))
    parts.append("<h2>Promotion and bandit history</h2>")
    if loop.history:
        parts.append(_table(("at", "version", "phase", "champion then", "reason"), [
            (esc(str(h.get("at", ""))), f"v{esc(str(h.get('version')))}",
             esc(str(h.get("phase"))), esc(str(h.get("champion") or "-")),
             esc(str(h.get("reason") or "")[:300])) for h in loop.history]))
    else:
        parts.append("<p class=muted>no promotions yet</p>")
    for version, verdicts in sorted(loop.verdicts.items()):
        parts.append(f"<h3>Bake of v{esc(version)}: guard verdicts</h3>")
        parts.append(_table(("at", "verdict", "reason"), [
            (esc(str(v.get("at", ""))), esc(str(v.get("verdict"))),
             esc(str(v.get("reason", ""))[:300])) for v in verdicts]))
    return parts


def write_report(
    out: Path,
    *,
    model: str,
    version: str,
    profile: ReferenceProfile,
    result: DriftResult | None,
    current: Mapping[str, np.ndarray],
    labeled: Sequence[tuple[datetime, Mapping[str, Any]]],
    quality: Sequence[QualityStat],
    estimated: Sequence[QualityStat] = (),
    loop: LoopState | None = None,
    max_distributions: int = 6,
) -> ReportFiles:
    """Write the page to ``out`` (a ``.html`` file, or ``report.html`` in that folder)."""
    path = out if out.suffix == ".html" else out / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    esc = html.escape
    images: list[str] = []
    now = datetime.now(UTC).isoformat(timespec="seconds")
    parts = [f"<h1>driftloop report: {esc(model)} v{esc(version)}</h1>",
             f"<p class=muted>Generated {esc(now)}; reference: {profile.rows} rows "
             f"({esc(profile.source or 'unnamed')}, {esc(profile.created)}).</p>"]
    parts += _drift_section(result, profile, current, max_distributions, images)
    parts += _quality_section(labeled, quality, estimated, model, images)
    if loop is not None:
        parts += _loop_section(loop)
    page = ("<!doctype html><html lang=en><head><meta charset='utf-8'>"
            f"<title>driftloop report {esc(model)}</title><style>{STYLE}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")
    path.write_text(page)
    return ReportFiles(path, tuple(images))
