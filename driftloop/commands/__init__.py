"""CLI verbs. Each module exposes ``register(app: typer.Typer) -> None``; ``driftloop.cli``
adds every module it finds here, so a component brings its own verbs."""
