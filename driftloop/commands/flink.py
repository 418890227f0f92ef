"""``driftloop flink ...``: run the Flink jobs outside the local stack (batch preprocess, app)."""

from __future__ import annotations

import os
import subprocess
from typing import Annotated

import typer

from driftloop.settings import PROJECT_ROOT

flink_app = typer.Typer(help="Flink jobs: batch preprocessing over the blob store, the app.")


def _run(module: str, args: list[str]) -> int:
    from driftloop.cli import load_settings
    from driftloop.local.components.flink import python, settings_env

    settings = load_settings()
    py = python(settings)
    if not py.exists():
        typer.echo(f"error: {py} missing: run make setup", err=True)
        return 2
    env = {**settings_env(settings), "PYTHONPATH": str(PROJECT_ROOT)}
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


@flink_app.command("send-samples")
def send_samples(
    audio: Annotated[int, typer.Option(help="Audio clips to send.")] = 5,
    images: Annotated[int, typer.Option(help="Images to send.")] = 5,
    wait_s: Annotated[float, typer.Option(help="How long to wait for the results.")] = 60.0,
) -> None:
    """Send synthetic raw inputs and show their preprocessed records as they come out."""
    from driftloop.cli import load_settings
    from driftloop.raw_samples import await_preprocessed, describe, publish_samples

    settings = load_settings()
    ids = publish_samples(settings, audio=audio, images=images, source="driftloop/cli")
    typer.echo(f"sent {audio} audio clips and {images} images to the raw topics")
    missing = await_preprocessed(settings, ids, wait_s=wait_s, client="cli-preprocess",
                                 on_record=lambda topic, ev: typer.echo(describe(topic, ev)))
    if missing:
        typer.echo(f"error: {len(missing)} inputs not preprocessed after {wait_s:g}s", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(flink_app, name="flink")
