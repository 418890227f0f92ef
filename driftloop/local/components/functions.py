"""feedback-intake under functions-framework, and the archive consumer."""

from __future__ import annotations

import sys
from pathlib import Path

from driftloop.local.components import ComponentSpec
from driftloop.local.components.kafka import bootstrap_for
from driftloop.local.process import http_ok
from driftloop.settings import PROJECT_ROOT, Settings

FUNCTIONS_DIR = PROJECT_ROOT / "functions"


def venv_bin(name: str) -> str:
    """A console script of the interpreter running driftloop (the .venv)."""
    return str(Path(sys.executable).parent / name)


def child_env(settings: Settings) -> dict[str, str]:
    """What every child process of the stack needs to find the stack's services."""
    return {
        "DRIFTLOOP_KAFKA_BOOTSTRAP": bootstrap_for(settings),
        "DRIFTLOOP_STATE_DIR": str(settings.state_dir),
        "DRIFTLOOP_BLOB_URL": settings.resolved_blob_url,
        "PYTHONUNBUFFERED": "1",
    }


def function_spec(
    settings: Settings, *, name: str, target: str, port: int, order: int = 50
) -> ComponentSpec:
    """A function of ``functions/<name>/main.py`` served by functions-framework."""
    url = f"http://127.0.0.1:{port}"
    return ComponentSpec(
        name=name,
        argv=[venv_bin("functions-framework"), "--target", target,
              "--source", str(FUNCTIONS_DIR / name / "main.py"),
              "--host", "127.0.0.1", "--port", str(port)],
        order=order,
        endpoint=url,
        health=lambda: http_ok(f"{url}/healthz"),
        env=child_env(settings),
        cwd=PROJECT_ROOT,
        ports=(port,),
        start_timeout_s=30,
        metrics=f"127.0.0.1:{port}",
    )


def archive_by_consumer(settings: Settings) -> bool:
    if settings.archive_engine == "consumer":
        return True
    if settings.archive_engine == "flink":
        return False
    return not (PROJECT_ROOT / ".venv-flink" / "bin" / "python").exists()


def components(settings: Settings) -> list[ComponentSpec]:
    specs = [
        function_spec(settings, name="feedback-intake", target="intake",
                      port=settings.intake_port),
        function_spec(settings, name="drift-check", target="drift_check",
                      port=settings.drift_check_port),
    ]
    if archive_by_consumer(settings):
        specs.append(
            ComponentSpec(
                name="archive",
                argv=[sys.executable, "-m", "driftloop.archive"],
                order=55,
                endpoint=settings.resolved_blob_url,
                health=lambda: True,
                env=child_env(settings),
                cwd=PROJECT_ROOT,
                start_timeout_s=10,
            )
        )
    return specs
