"""Test session wiring: every module in tests/fixtures/ is a pytest plugin.

Heavy services (Kafka, the S3 server, MLServer, Flink, Prometheus) are started
once per session by those fixtures, on free loopback ports.
"""

from __future__ import annotations

import pkgutil
from pathlib import Path

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
