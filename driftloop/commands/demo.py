"""``driftloop demo``: the loop end to end on the embedded defaults."""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        stop: Annotated[
            bool, typer.Option("--down/--keep-up", help="Stop the stack at the end.")
        ] = False,
    ) -> None:
        """Start the local stack and show events flowing through the loop."""
        from rich.console import Console

        from driftloop.cli import fail, load_settings
        from driftloop.demo import runner
        from driftloop.errors import DriftloopError
        from driftloop.local.stack import Stack

        console = Console()
        settings = load_settings()
        try:
            runner.run(settings, console)
        except (DriftloopError, RuntimeError) as e:
            raise fail(getattr(e, "message", str(e))) from e
        console.rule("status")
        from driftloop.cli import status as print_status

        print_status(as_json=False, state_dir=None)
        if stop:
            Stack(settings).down()
            console.print("stack stopped")
        else:
            console.print("the stack keeps running: [bold]make down[/bold] stops it")
