"""``driftloop report``: an HTML page with PNG plots of drift per feature and quality over time.

Plots are rendered with matplotlib's non-interactive Agg backend into the output folder
next to ``report.html``, so the folder can be archived or served as it is.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from driftloop.drift import DriftResult, NumericProfile, ReferenceProfile
from driftloop.monitoring.quality import QualityStat, over_time


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    images: tuple[Path, ...]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_drift(result: DriftResult, path: Path) -> Path:
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
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_distribution(name: str, ref: NumericProfile, current: np.ndarray, path: Path) -> Path:
    """Reference vs current histogram of one numeric feature (reference from its sample)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    lo = float(min(ref.sample.min(), current.min()))
    hi = float(max(ref.sample.max(), current.max()))
    bins = np.linspace(lo, hi if hi > lo else lo + 1, 40)
    ax.hist(ref.sample, bins=bins, density=True, alpha=0.5, label="reference")
    ax.hist(current, bins=bins, density=True, alpha=0.5, label="current")
    ax.set_title(name)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_quality(points: Sequence[tuple[datetime, QualityStat]], path: Path) -> Path:
    """Mean quality per time bucket, one line per (version, metric)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.5))
    series: dict[tuple[str, str], list[tuple[datetime, float]]] = {}
    for t, s in points:
        series.setdefault((s.version, s.metric), []).append((t, s.mean))
    for (version, metric), pts in sorted(series.items()):
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"v{version} {metric}")
    if not series:
        ax.text(
            0.5,
            0.5,
            "no labeled feedback in the window",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    ax.set_title("Quality over time (labeled feedback)")
    ax.set_ylabel("mean")
    if series:
        ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(
    out_dir: Path,
    *,
    model: str,
    version: str,
    profile: ReferenceProfile,
    result: DriftResult | None,
    current: Mapping[str, np.ndarray],
    labeled: Sequence[tuple[datetime, Mapping[str, Any]]],
    quality: Sequence[QualityStat],
    max_distributions: int = 6,
) -> ReportFiles:
    """Render the plots and ``report.html`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    images: list[Path] = []
    parts: list[str] = []
    esc = html.escape
    parts.append(f"<h1>driftloop report: {esc(model)} v{esc(version)}</h1>")
    now = datetime.now(UTC).isoformat(timespec="seconds")
    parts.append(
        f"<p>Generated {esc(now)}; reference: {profile.rows} rows "
        f"({esc(profile.source or 'unnamed')}, {esc(profile.created)}).</p>"
    )
    if result is not None:
        images.append(plot_drift(result, out_dir / "drift_features.png"))
        verdict = "DRIFT" if result.dataset_drift else "no dataset drift"
        parts.append(f"<h2>Drift: {verdict} ({result.share_drifted:.0%} of features)</h2>")
        parts.append('<img src="drift_features.png" alt="drift per feature">')
        rows = "".join(
            f"<tr><td>{esc(n)}</td><td>{esc(f.statistic)}</td><td>{f.value:.4g}</td>"
            f"<td>{f.threshold:.4g}</td><td>{'yes' if f.drifted else 'no'}</td>"
            f"<td>{f.n_current}</td></tr>"
            for n, f in result.features.items()
        )
        parts.append(
            "<table border=1 cellpadding=4><tr><th>feature</th><th>statistic</th>"
            "<th>value</th><th>threshold</th><th>drifted</th><th>rows</th></tr>"
            f"{rows}</table>"
        )
        ranked = sorted(result.features.values(), key=lambda f: not f.drifted)
        shown = 0
        for f in ranked:
            ref = profile.features.get(f.name)
            if shown >= max_distributions or not isinstance(ref, NumericProfile):
                continue
            fname = f"dist_{shown}.png"
            images.append(
                plot_distribution(f.name, ref, np.asarray(current[f.name], float), out_dir / fname)
            )
            parts.append(f'<img src="{fname}" alt="{esc(f.name)}">')
            shown += 1
    else:
        parts.append("<h2>Drift: no current window</h2>")
    span = [t for t, _ in labeled]
    bucket = max((max(span) - min(span)).total_seconds() / 20, 60.0) if span else 3600.0
    images.append(
        plot_quality(
            over_time(labeled, model=model, bucket_s=bucket), out_dir / "quality_over_time.png"
        )
    )
    parts.append("<h2>Quality</h2>")
    parts.append('<img src="quality_over_time.png" alt="quality over time">')
    if quality:
        rows = "".join(
            f"<tr><td>v{esc(q.version)}</td><td>{esc(q.metric)}</td>"
            f"<td>{q.mean:.4g}</td><td>{q.count}</td></tr>"
            for q in quality
        )
        parts.append(
            "<table border=1 cellpadding=4><tr><th>version</th><th>metric</th>"
            f"<th>mean</th><th>samples</th></tr>{rows}</table>"
        )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>driftloop report {esc(model)}</title></head><body>"
        + "\n".join(parts)
        + "</body></html>\n"
    )
    path = out_dir / "report.html"
    path.write_text(page)
    return ReportFiles(path, tuple(images))
