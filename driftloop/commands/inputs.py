"""``driftloop expire-inputs``: the kept-inputs retention job by hand (the same code the
hourly ``inputs-retention`` tick runs in retrain-trigger)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from driftloop.commands.options import safe_name

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    from driftloop.cli import load_settings

    @app.command("expire-inputs")
    def expire_inputs(
        model: Annotated[
            list[str] | None,
            typer.Option(
                "--model",
                "-m",
                help="Only this model (repeatable); default: every model with a policy.",
                callback=lambda v: [safe_name(m) for m in v] if v else v,
            ),
        ] = None,
    ) -> None:
        """Delete kept inputs past their policy's retention (and, with only_with_feedback,
        unlabeled ones past the feedback window); prints one report per model as JSON."""
        from driftloop.blob import open_store
        from driftloop.retrain.retention import expire_all
        from driftloop.retrain.state import now_utc

        settings = load_settings()
        store = open_store(settings.resolved_blob_url, settings)
        reports = expire_all(store, settings.policy_dir, now=now_utc(), models=model or None)
        typer.echo(json.dumps([r.to_dict() for r in reports]))
