"""The S3 backend's fail-closed check, with a stand-in for a server that ignores
``If-None-Match`` (the real server's behaviour is tested in
tests/integration/test_blob_conditional.py)."""

from __future__ import annotations

from typing import Any

import pytest

from driftloop.blob import S3Store
from driftloop.errors import Unavailable


class IgnoresConditions:
    """Answers every PUT with 200, whatever its conditions (some S3 servers do)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, **_: Any) -> dict:
        self.objects[Key] = Body
        return {}

    def delete_object(self, *, Bucket: str, Key: str) -> dict:
        self.objects.pop(Key, None)
        return {}


def test_a_server_that_ignores_if_none_match_makes_conditional_writes_fail_closed() -> None:
    store = S3Store("b", "p", endpoint_url="http://127.0.0.1:9", access_key_id="x",
                    secret_access_key="y", region="us-east-1")
    fake = IgnoresConditions()
    store._client = fake  # type: ignore[assignment]
    with pytest.raises(Unavailable, match="ignores If-None-Match"):
        store.put_if_absent("runs/digits/starts/0000000001.json", b"{}")
    assert "p/runs/digits/starts/0000000001.json" not in fake.objects  # nothing claimed
    assert fake.objects == {}  # the probe cleaned up after itself
