"""Test session wiring: every module in tests/fixtures/ is a pytest plugin.

Heavy services (Kafka, the S3 server, MLServer, Flink, Prometheus) are started
once per session by those fixtures, on free loopback ports.
"""

from __future__ import annotations

import pkgutil
from pathlib import Path

import pytest

_fixtures = Path(__file__).parent / "fixtures"
# The shared services first: other fixture modules import them.
_FIRST = ("kafka", "s3")
pytest_plugins = [
    f"tests.fixtures.{name}"
    for name in sorted(
        (m.name for m in pkgutil.iter_modules([str(_fixtures)]) if not m.ispkg),
        key=lambda n: (n not in _FIRST, _FIRST.index(n) if n in _FIRST else 0, n),
    )
]

SERVER_FIXTURES = frozenset(
    {
        "kafka",
        "own_kafka",
        "ha_env",
        "s3",
        "mlserver",
        "monitoring",
        "flink_kafka",
        "flink_app",
        "intake_server",
        "receiver",
        "dispatcher_process",
    }
)
"""Fixtures that start a server process. A test that uses one, directly or through another
fixture, is marked ``servers``: `make test-unit` deselects those, so it runs with no server."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        level = Path(str(item.path)).parent.name
        if level in {"integration", "e2e"}:
            item.add_marker(getattr(pytest.mark, level))
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.servers)
