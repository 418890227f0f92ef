"""``driftloop flink ...``: run the Flink jobs outside the local stack (batch preprocess, app)."""

from __future__ import annotations

import subprocess
from typing import Annotated

import typer

from driftloop.settings import PROJECT_ROOT, get_settings

flink_app = typer.Typer(help="Flink jobs: batch preprocessing over the blob store, the app.")


def _run(module: str, args: list[str]) -> int:
    from driftloop.local.components.flink import python, settings_env

    settings = get_settings()
    py = python(settings)
    if not py.exists():
        typer.echo(f"error: {py} missing: run make setup", err=True)
        return 2
    env = {**settings_env(settings), "PYTHONPATH": str(PROJECT_ROOT)}
    import os

    return subprocess.call([str(py), "-m", module, *args], env={**os.environ, **env},
                           cwd=PROJECT_ROOT)


@flink_app.command("preprocess-batch")
def preprocess_batch(
    input_prefix: Annotated[str, typer.Option("--input", help="Blob prefix of media objects.")],
    output_prefix: Annotated[str, typer.Option("--output", help="Blob prefix for results.")],
    model: Annotated[str | None, typer.Option(help="Model for keys without model=<m>.")] = None,
) -> None:
    """Preprocess every .wav/.png/.jpg under a blob prefix with the stream job's transforms."""
    args = ["--input", input_prefix, "--output", output_prefix]
    if model:
        args += ["--model", model]
    raise typer.Exit(_run("flink.jobs.batch", args))


@flink_app.command("run")
def run(
    pipelines: Annotated[str | None, typer.Option(help="preprocess,join,archive")] = None,
) -> None:
    """Run the streaming application in the foreground (Ctrl-C stops it)."""
    raise typer.Exit(_run("flink.jobs.app", ["--pipelines", pipelines] if pipelines else []))


def register(app: typer.Typer) -> None:
    app.add_typer(flink_app, name="flink")
