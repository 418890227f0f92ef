"""The ``driftloop`` command line. Every flag has a ``DRIFTLOOP_*`` variable (Settings).

Verbs of the local stack live here; each module of ``driftloop.commands`` adds its own.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup
from typer.exceptions import TyperException

from driftloop import commands
from driftloop.errors import DriftloopError
from driftloop.settings import Settings

_MAX_LINE = 500


class OneLineErrors(TyperGroup):
    """Every failure of a command is one line on stderr and a non-zero exit, never a
    traceback: 2 for bad input (options, files, a 4xx), 1 for anything else."""

    # TyperGroup always builds a typer.Context; its base class (the click copy vendored in
    # typer) declares the wider click Context, which only lives in a private module.
    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except TyperException as e:
            # A bad option of a subcommand: its message on one line, not a usage box.
            message = getattr(e, "format_message", None)
            if message is None or type(e).__name__ == "NoArgsIsHelpError":
                raise
            raise fail(message(), code=int(getattr(e, "exit_code", 2))) from e
        except DriftloopError as e:
            raise fail(e.message, code=2 if 400 <= e.status < 500 else 1) from e
        except ValidationError as e:
            raise fail(settings_error(e), code=2) from e
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            raise fail(f"{where}{e.strerror or e}", code=2) from e
        except RecursionError as e:
            raise fail("input is nested too deeply", code=2) from e
        except Exception as e:
            raise fail(f"unexpected {type(e).__name__}: {e}") from e


app = typer.Typer(
    name="driftloop",
    help="The closed loop around models in production.",
    no_args_is_help=True,
    add_completion=False,
    cls=OneLineErrors,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def settings_error(e: ValidationError) -> str:
    """A settings validation error as one line naming each variable and its rule."""
    parts = []
    for err in e.errors():
        name = ".".join(str(x) for x in err.get("loc", ())) or "settings"
        parts.append(f"DRIFTLOOP_{name.upper()}: {err.get('msg')}")
    return "; ".join(parts)


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment with the CLI's flags on top (flags win)."""
    try:
        # Flag values are checked by Settings itself (the same rules as its variables).
        flags: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
        return Settings(**flags)
    except ValidationError as e:
        raise fail(settings_error(e), code=2) from e


def fail(message: str, code: int = 1) -> typer.Exit:
    """One clear line on stderr, then exit non-zero."""
    line = " ".join(str(message).split())
    if len(line) > _MAX_LINE:
        line = line[:_MAX_LINE] + "..."
    console.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


StateDir = Annotated[
    str | None, typer.Option("--state-dir", help="Env: DRIFTLOOP_STATE_DIR.", show_default=False)
]


@app.command()
def up(
    state_dir: StateDir = None,
    topology: Annotated[
        str | None,
        typer.Option(
            "--topology",
            help="light: one Kafka broker, one TaskManager (the default). ha: three Kafka "
            "brokers in one KRaft quorum (replication factor 3, min.insync.replicas 2) and "
            "two TaskManagers. Env: DRIFTLOOP_TOPOLOGY.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Start the local stack (Kafka, functions, archive, and whatever else is set up)."""
    from driftloop.local.stack import AlreadyUp, Stack

    stack = Stack(load_settings(state_dir=state_dir, topology=topology))
    try:
        with console.status("starting the local stack") as spinner:
            statuses = stack.up(progress=lambda msg: spinner.update(msg))
    except AlreadyUp as e:
        console.print(str(e))
        return
    except DriftloopError as e:
        raise fail(e.message) from e
    _print_status([s.to_dict() for s in statuses])


@app.command()
def down(state_dir: StateDir = None) -> None:
    """Stop exactly what ``up`` started."""
    from driftloop.local.stack import Stack

    try:
        stopped = Stack(load_settings(state_dir=state_dir)).down()
    except DriftloopError as e:
        raise fail(e.message) from e
    console.print(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    state_dir: StateDir = None,
) -> None:
    """Every component of the local stack: pid, endpoint, health."""
    from driftloop.local.stack import Stack

    try:
        rows = [s.to_dict() for s in Stack(load_settings(state_dir=state_dir)).status()]
    except DriftloopError as e:
        raise fail(e.message) from e
    if as_json:
        typer.echo(json.dumps({"components": rows}, indent=2))
    else:
        _print_status(rows)
    if rows and not all(r["healthy"] for r in rows):
        raise typer.Exit(3)


def _print_status(rows: list[dict[str, object]]) -> None:
    if not rows:
        Console().print("the local stack is not running")
        return
    table = Table("component", "pid", "endpoint", "healthy")
    for r in rows:
        table.add_row(str(r["name"]), str(r["pid"]), str(r["endpoint"]),
                      "[green]yes[/green]" if r["healthy"] else "[red]no[/red]")
    Console().print(table)
    for r in rows:
        jobs = r.get("jobs")  # Flink jobs, from the JobManager's REST API
        for job in jobs if isinstance(jobs, list) else []:
            if isinstance(job, dict):
                Console().print(_job_line(job))


def _job_line(job: dict[str, Any]) -> str:
    """One line per Flink job: its state and its last completed checkpoint."""
    cp = job.get("last_checkpoint")
    last = (f"last checkpoint #{cp['id']} {cp['age_s']:.0f} s ago ({cp['duration_ms']} ms)"
            if cp else "no checkpoint yet")
    failed = job.get("failed_checkpoints")
    return (f"flink job {job['name']}: {job['state']}, {last}"
            + (f", {failed} failed" if failed else ""))


def _register_commands() -> None:
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
