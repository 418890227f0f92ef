"""``driftloop drift``, ``report`` and ``drift-profile``: drift checks at a terminal."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from driftloop.commands.options import safe_name, safe_version
from driftloop.errors import DriftloopError

NAN_POLICIES = ("raise", "omit")


def _load_columns(path: Path) -> dict[str, Any]:
    from driftloop.monitoring.window import read_frame

    if not path.is_file():
        raise typer.BadParameter(f"{path} is not a file")
    return read_frame(path.read_bytes(), path.name)


def _rules(specs: list[str]) -> dict[str, Any]:
    """``feature=statistic[:threshold]`` or ``feature=:threshold`` → FeatureRule per feature."""
    from driftloop.drift import FeatureRule
    from driftloop.drift.detect import CATEGORICAL_STATISTICS, NUMERIC_STATISTICS

    known = NUMERIC_STATISTICS + CATEGORICAL_STATISTICS
    out = {}
    for spec in specs:
        name, sep, rest = spec.partition("=")
        stat, _, thr = rest.partition(":")
        if not sep or not name:
            raise typer.BadParameter(f"--rule {spec!r}: use feature=statistic[:threshold]")
        if stat and stat not in known:
            raise typer.BadParameter(f"--rule {spec!r}: statistic {stat!r} is not one of "
                                     f"{', '.join(known)}")
        try:
            threshold = float(thr) if thr else None
        except ValueError as e:
            raise typer.BadParameter(f"--rule {spec!r}: threshold is not a number") from e
        if threshold is not None and not (math.isfinite(threshold) and threshold >= 0):
            raise typer.BadParameter(f"--rule {spec!r}: threshold must be a finite number >= 0")
        out[name] = FeatureRule(statistic=stat or None, threshold=threshold)
    return out


def _drift_share(value: float) -> float:
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise typer.BadParameter(f"{value} is not a share in (0, 1]")
    return value


def _nan_policy(value: str) -> str:
    if value not in NAN_POLICIES:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(NAN_POLICIES)}")
    return value


def register(app: typer.Typer) -> None:
    from driftloop.cli import console, fail, load_settings

    @app.command()
    def drift(
        reference: Annotated[Path, typer.Option(help="Reference CSV or Parquet file.")],
        current: Annotated[Path, typer.Option(help="Current CSV or Parquet file.")],
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
        rule: Annotated[
            list[str] | None,
            typer.Option(
                help="Per-feature override feature=statistic[:threshold] (repeatable); statistics: "
                "ks, psi, wasserstein, chi2, jensenshannon, linf."
            ),
        ] = None,
        drift_share: Annotated[
            float, typer.Option(help="Share of drifted features at which the dataset drifts "
                                "(0 < share <= 1).", callback=_drift_share)
        ] = 0.5,
        nan_policy: Annotated[str, typer.Option(help="raise or omit NaN values.",
                                                callback=_nan_policy)] = "raise",
    ) -> None:
        """Compare two files column by column; print per-feature statistics and the verdict."""
        from driftloop.drift import DriftConfig, DriftInputError, build_profile, detect

        try:
            ref_cols = _load_columns(reference)
            cur_cols = _load_columns(current)
            # _nan_policy already refused anything else.
            nan: Literal["raise", "omit"] = "omit" if nan_policy == "omit" else "raise"
            cfg = DriftConfig(features=_rules(rule or []), drift_share=drift_share, nan_policy=nan)
            profile = build_profile(
                ref_cols, max_sample=None, nan_policy=nan_policy, source=str(reference)
            )
            result = detect(profile, cur_cols, cfg)
        except (DriftInputError, DriftloopError) as e:
            raise fail(str(e)) from e
        if as_json:
            typer.echo(json.dumps(result.verdict(), allow_nan=False))
            return
        from rich.table import Table

        table = Table(title=f"{current.name} vs {reference.name}")
        for col in ("feature", "statistic", "value", "threshold", "drifted"):
            table.add_column(col)
        for name, f in result.features.items():
            table.add_row(
                name,
                f.statistic,
                f"{f.value:.4g}",
                f"{f.threshold:.4g}",
                "[red]yes[/red]" if f.drifted else "no",
            )
        out = typer.get_text_stream("stdout")
        from rich.console import Console

        Console(file=out).print(table)
        verdict = "DRIFT" if result.dataset_drift else "no dataset drift"
        typer.echo(
            f"{verdict}: {len(result.drifted_features)}/{len(result.features)} features "
            f"drifted (share {result.share_drifted:.2f}, rule >= {drift_share})"
        )

    @app.command("drift-profile")
    def drift_profile(
        model: Annotated[str, typer.Option("--model", "-m", help="Model name.",
                                           callback=safe_name)],
        data: Annotated[Path, typer.Option(help="Reference CSV or Parquet file.")],
        version: Annotated[str, typer.Option(help="Version or alias.",
                                             callback=safe_version)] = "champion",
    ) -> None:
        """Store a reference profile from a file beside a registered model version."""
        from driftloop.blob import open_store
        from driftloop.drift import DriftInputError, build_profile
        from driftloop.monitoring.profiles import save_profile
        from driftloop.registry import Registry

        settings = load_settings()
        try:
            store = open_store(settings.resolved_blob_url, settings)
            resolved = Registry(store).resolve(model, version)
            profile = build_profile(_load_columns(data), source=str(data))
            key = save_profile(store, model, resolved, profile)
        except (DriftInputError, DriftloopError) as e:
            raise fail(str(e)) from e
        console.print(f"stored {key} ({len(profile.features)} features, {profile.rows} rows)")

    @app.command()
    def report(
        model: Annotated[str, typer.Option("--model", "-m", help="Model name.",
                                           callback=safe_name)],
        version: Annotated[
            str | None, typer.Option(help="Version or alias; default: the champion.",
                                     callback=safe_version)
        ] = None,
        current: Annotated[
            Path | None,
            typer.Option(help="Current window from a CSV/Parquet file instead of Kafka."),
        ] = None,
        out: Annotated[Path, typer.Option(
            help="Output .html file, or a folder to write report.html into.")
        ] = Path("driftloop-report"),
    ) -> None:
        """Write one self-contained HTML page: drift, distributions, quality, promotions."""
        from datetime import UTC, datetime

        from driftloop.drift import DriftConfig, DriftInputError, detect
        from driftloop.monitoring.check import DriftCheckService, Window
        from driftloop.monitoring.profiles import load_profile
        from driftloop.monitoring.quality import QualityStat, aggregate
        from driftloop.monitoring.report import load_loop_state, write_report

        if out.suffix != ".html" and out.exists() and not out.is_dir():
            raise fail(f"--out {out}: exists and is not a folder", code=2)
        settings = load_settings()
        svc = DriftCheckService(settings)
        try:
            resolved = svc.resolve_version(model, version)
            profile = load_profile(svc.store, model, resolved)
            if current is not None:
                window = Window(_load_columns(current), [], {"file": 0})
            else:
                window = svc.read_window(model, resolved, list(profile.features))
            present = {k: v for k, v in window.columns.items() if k in profile.features}
            result = None
            if present:
                from dataclasses import replace

                sub = replace(profile, features={k: profile.features[k] for k in present})
                result = detect(
                    sub, present, DriftConfig(drift_share=settings.drift_share, nan_policy="omit")
                )
            labeled = [
                (datetime.fromtimestamp(ts / 1000, UTC), rec)
                for ts, rec in zip(window.labeled_ts_ms, window.labeled, strict=False)
            ]
            files = write_report(
                out,
                model=model,
                version=resolved,
                profile=profile,
                result=result,
                current=present,
                labeled=labeled,
                quality=aggregate(window.labeled, model=model),
                estimated=[
                    QualityStat(e.model, e.version, e.metric, e.value, e.count)
                    for e in svc.estimates(model, resolved, window, fit_missing=False)
                ],
                loop=load_loop_state(svc.store, model),
            )
        except (DriftInputError, DriftloopError) as e:
            raise fail(str(e)) from e
        finally:
            svc.close()
        console.print(f"wrote {files.html} ({len(files.images)} plots)")
