"""Body limits on the real server (functions-framework under gunicorn, real Kafka): a body
over the limit is a 413 whether it declares its length or streams in chunks, the client
gets the answer (not a reset connection), and the server keeps serving."""

from __future__ import annotations

import httpx
import pytest

from driftloop import events as ev
from tests.fixtures.intake import feedback, post_binary, unique_source

pytestmark = pytest.mark.integration

LIMIT = 1024 * 1024  # DRIFTLOOP_INTAKE_MAX_BODY_BYTES of the session's server (the default)


def chunks(total: int, size: int = 64 * 1024):
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        yield b" " * n
        sent += n


@pytest.mark.parametrize("mode", ["declared", "chunked"])
def test_body_over_the_limit_is_413_on_the_real_server(intake_server, mode):
    headers = {"content-type": ev.STRUCTURED}
    with httpx.Client(base_url=intake_server.url, timeout=30) as client:
        if mode == "declared":
            r = client.post("/", headers=headers, content=b" " * (LIMIT + 1))
        else:
            r = client.post("/", headers=headers, content=chunks(LIMIT + 1))
        assert r.status_code == 413, r.text
        assert r.json()["fields"][0] == {"field": "body", "rule": "max-size",
                                         "message": f"at most {LIMIT} bytes"}
        # The server answers the next request as usual.
        assert post_binary(client, "/", feedback(unique_source(), 1)).status_code == 202


def test_body_at_the_limit_is_read_whole(intake_server):
    """A chunked body of exactly the limit is parsed (and refused for what it is, not
    for its size)."""
    with httpx.Client(base_url=intake_server.url, timeout=30) as client:
        r = client.post("/", headers={"content-type": ev.STRUCTURED}, content=chunks(LIMIT))
        assert r.status_code == 400 and r.json()["fields"][0]["rule"] == "json"
