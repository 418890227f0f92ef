"""``driftloop train``, ``driftloop promote`` and ``driftloop rollback``: the loop by hand,
through the same code as the retrain-trigger and promote functions."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from driftloop.commands.options import safe_name, safe_version
from driftloop.errors import DriftloopError

Model = Annotated[str, typer.Option("--model", "-m", help="Model name.", callback=safe_name)]


def register(app: typer.Typer) -> None:
    from driftloop.cli import console, fail, load_settings

    @app.command()
    def train(
        model: Model,
        params: Annotated[str, typer.Option(help="JSON object merged over the policy's "
                                            "training params.")] = "{}",
        run_id: Annotated[str | None, typer.Option(help="Run id (default: a new one).",
                                                   callback=safe_name)] = None,
    ) -> None:
        """Train a new version now (base data + labeled feedback), register it, emit
        model.trained; prints the run's result as JSON."""
        from driftloop.blob import open_store
        from driftloop.retrain.job import run_job
        from driftloop.retrain.state import RunStore, new_run_id

        settings = load_settings()
        try:
            extra = json.loads(params)
        except (json.JSONDecodeError, RecursionError) as e:
            raise fail(f"--params: not valid JSON ({e})") from e
        if not isinstance(extra, dict):
            raise fail("--params must be a JSON object")
        rid = run_id or new_run_id()
        code = run_job(settings, model, rid, extra)
        run = RunStore(open_store(settings.resolved_blob_url, settings)).get(model, rid)
        typer.echo(json.dumps(run.to_dict(), default=str))
        if code != 0:
            raise fail(f"training run {rid} of {model} failed: {run.error}")

    @app.command()
    def promote(
        model: Model,
        version: Annotated[str, typer.Option("--version", "-v", help="Version to promote.",
                                             callback=safe_version)],
        canary: Annotated[bool, typer.Option(
            help="Run the gate, canary and bake instead of promoting at once.")] = False,
    ) -> None:
        """Make VERSION the champion with all traffic (or --canary: the automatic path)."""
        from driftloop.promotion.service import PromotionService

        svc = PromotionService(load_settings(), background=False)
        try:
            out = svc.start(model, version) if canary else svc.promote(model, version)
        except DriftloopError as e:
            raise fail(e.message) from e
        finally:
            svc.close()
        typer.echo(json.dumps(out, default=str))

    @app.command()
    def rollback(
        model: Model,
        reason: Annotated[str, typer.Option(help="Why (recorded in the alias history).")] =
        "rolled back by hand",
        version: Annotated[str | None, typer.Option(
            "--version", "-v", help="The version to undo (refused unless it is the canary "
            "or the champion); default: the canary, else the champion.")] = None,
    ) -> None:
        """End the model's canary, or restore the champion the current one replaced."""
        from driftloop.promotion.service import PromotionService

        svc = PromotionService(load_settings(), background=False)
        try:
            out = svc.rollback(model, version=version, reason=reason)
        except DriftloopError as e:
            raise fail(e.message) from e
        finally:
            svc.close()
        console.print(f"{model}: v{out['version']} rolled back, v{out['restored_version']} "
                      "serves all traffic")
        typer.echo(json.dumps(out, default=str))
