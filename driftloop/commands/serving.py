"""``driftloop predict`` and ``driftloop models``: models for people at a terminal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from driftloop.commands.options import safe_name, safe_version
from driftloop.errors import DriftloopError

if TYPE_CHECKING:
    from driftloop.settings import Settings


def register(app: typer.Typer) -> None:
    from driftloop.cli import fail, load_settings

    @app.command()
    def predict(
        model: Annotated[str, typer.Option("--model", "-m", help="Model name.",
                                           callback=safe_name)],
        file: Annotated[Path | None, typer.Argument(
            help="A WAV, PNG or JPEG file, or a JSON tensor.", show_default=False)] = None,
        version: Annotated[str | None, typer.Option(
            help="A version or alias (champion, challenger); default: the champion.",
            callback=safe_version)] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
        batch: Annotated[str | None, typer.Option(
            help="Blob prefix of stored inputs to predict on (batch mode).")] = None,
        out: Annotated[str | None, typer.Option(
            help="Blob prefix for batch results (with --batch).")] = None,
        concurrency: Annotated[int | None, typer.Option(
            help="Inferences in flight in batch mode. Env: DRIFTLOOP_SERVING_BATCH_CONCURRENCY.",
            min=1)] = None,
        url: Annotated[str | None, typer.Option(
            help="V2 server base URL. Env: DRIFTLOOP_SERVING_URL.")] = None,
    ) -> None:
        """Send one file to a model (or a stored batch) and print the prediction and its id."""
        from driftloop.serving.client import V2Client

        settings = load_settings(serving_url=url, serving_batch_concurrency=concurrency)
        try:
            resolved = _resolve_version(settings, model, version)
            if batch is not None:
                if out is None or file is not None:
                    raise fail("--batch needs --out and no FILE")
                from driftloop.serving.batch import run_batch

                summary = run_batch(settings, model, batch, out, version=resolved,
                                    progress=not as_json)
                typer.echo(json.dumps(summary.to_dict()) if as_json else summary.describe())
                return
            if file is None:
                raise fail("give a FILE, or --batch PREFIX --out PREFIX")
            if not file.is_file():
                raise fail(f"{file}: no such file")
            with V2Client(settings.resolved_serving_url, timeout_s=settings.serving_timeout_s) as c:
                pred = c.infer_file(model, file, version=resolved)
        except DriftloopError as e:
            raise fail(e.message, code=2 if 400 <= e.status < 500 else 1) from e
        if as_json:
            typer.echo(json.dumps(pred.to_dict()))
            return
        typer.echo(f"id {pred.id}  model {pred.model}  version {pred.version}")
        typer.echo(json.dumps(pred.output, indent=2))

    @app.command()
    def models(
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    ) -> None:
        """Every registered model: task, metric, versions with metrics, aliases."""
        from rich.console import Console
        from rich.table import Table

        from driftloop.blob import open_store
        from driftloop.catalogue import FAMILIES
        from driftloop.registry import Registry

        settings = load_settings()
        try:
            rows = []
            for m in Registry(open_store(settings.resolved_blob_url, settings)).describe():
                spec = FAMILIES.get(m["name"])
                rows.append({"name": m["name"], "task": spec.task if spec else None,
                             "metric": spec.metric if spec else None, **m})
        except DriftloopError as e:
            raise fail(e.message) from e
        if as_json:
            typer.echo(json.dumps({"models": rows}, indent=2))
            return
        if not rows:
            Console().print("no models registered (driftloop up registers the first versions)")
            return
        table = Table("model", "task", "metric", "versions", "champion", "challenger")
        for r in rows:
            versions = ", ".join(
                v["version"] + (f" ({_fmt(v['metrics'])})" if v["metrics"] else "")
                for v in r["versions"])
            table.add_row(r["name"], str(r["task"]), str(r["metric"]), versions,
                          r["aliases"].get("champion", "-"), r["aliases"].get("challenger", "-"))
        Console().print(table)


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.3g}" for k, v in metrics.items() if k != "n")


def _resolve_version(settings: Settings, model: str, version: str | None) -> str | None:
    """An alias resolved through the registry; a plain version as is; None for the default."""
    if version is None:
        return None
    from driftloop.registry import ALIASES

    if version not in ALIASES:
        return version
    from driftloop.blob import open_store
    from driftloop.registry import Registry

    return Registry(open_store(settings.resolved_blob_url, settings)).resolve(model, version)
