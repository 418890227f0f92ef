"""`make test-unit` starts no server: every fixture that starts one is known to tests/conftest.py,
which marks the tests using it (`servers`) so that test-unit deselects them."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import SERVER_FIXTURES

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
STARTS = {"Popen", "start", "serve", "serve_forever"}


def _starting_fixtures() -> set[str]:
    """Fixtures whose body starts something (a process, a server, a thread that serves)."""
    found = set()
    for path in FIXTURES.glob("*.py"):
        for fn in ast.parse(path.read_text()).body:
            if not isinstance(fn, ast.FunctionDef):
                continue
            if not any("fixture" in ast.unparse(d) for d in fn.decorator_list):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Call):
                    f = node.func
                    name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                    if name in STARTS or name.startswith("start_"):
                        found.add(fn.name)
    return found


def test_every_fixture_that_starts_a_server_is_a_server_fixture():
    starting = _starting_fixtures()
    assert {"kafka", "s3", "mlserver", "monitoring", "receiver"} <= starting
    assert starting - SERVER_FIXTURES == set()


def test_tests_using_a_server_fixture_are_marked(request):
    items = [
        i for i in request.session.items if SERVER_FIXTURES & set(getattr(i, "fixturenames", ()))
    ]
    assert all(i.get_closest_marker("servers") for i in items)
    assert request.node.get_closest_marker("servers") is None
