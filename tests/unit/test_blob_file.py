"""The file:// blob backend and key rules (the s3:// backend runs against a real server
in tests/integration/test_blob_s3.py)."""

from __future__ import annotations

import pytest

from driftloop.blob import FileStore, check_key, open_store, partition_key
from driftloop.settings import Settings


@pytest.fixture
def store(tmp_path):
    return open_store((tmp_path / "b").as_uri(), Settings(state_dir=tmp_path))


def test_put_get_list_delete(store):
    store.put("x/model=a/date=2026-01-01/1.jsonl", b"one")
    store.put("x/model=a/date=2026-01-02/2.jsonl", b"two")
    store.put("y/z", b"three")
    assert store.get("x/model=a/date=2026-01-01/1.jsonl") == b"one"
    assert list(store.list("x/")) == ["x/model=a/date=2026-01-01/1.jsonl",
                                      "x/model=a/date=2026-01-02/2.jsonl"]
    assert list(store.list("x/model=a/date=2026-01-02")) == ["x/model=a/date=2026-01-02/2.jsonl"]
    assert list(store.list("")) == [*list(store.list("x/")), "y/z"]
    assert list(store.list("nothing/")) == []
    store.delete("y/z")
    assert not store.exists("y/z")
    with pytest.raises(KeyError):
        store.get("y/z")


def test_put_is_atomic_replace(store, tmp_path):
    store.put("k", b"old")
    store.put("k", b"new")
    assert store.get("k") == b"new"
    leftovers = [p for p in (tmp_path / "b").rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers == []


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", "a\\b", "a/\x00"])
def test_bad_keys_refused(store, key):
    with pytest.raises(ValueError):
        store.put(key, b"x")
    with pytest.raises(ValueError):
        check_key(key)


def test_partition_key_layout():
    assert partition_key("feedback", "digits", "2026-11-28", "f.jsonl") == (
        "feedback/model=digits/date=2026-11-28/f.jsonl"
    )
    with pytest.raises(ValueError):
        partition_key("feedback", "../x", "2026-11-28", "f")
    with pytest.raises(ValueError):
        partition_key("feedback", "m", "28/11/2026", "f")


def test_open_store_rejects_unknown_scheme(tmp_path):
    s = Settings(state_dir=tmp_path)
    for url in ("http://x/y", "s3:///nobucket", "file://host/x"):
        with pytest.raises(ValueError):
            open_store(url, s)
    assert isinstance(open_store(tmp_path.as_uri(), s), FileStore)


def test_put_if_absent_lets_exactly_one_concurrent_writer_win(store, tmp_path):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    barrier = threading.Barrier(16)

    def claim(i: int) -> bool:
        barrier.wait()
        return store.put_if_absent("claims/k.json", f"writer {i}".encode())

    with ThreadPoolExecutor(16) as pool:
        won = list(pool.map(claim, range(16)))
    assert won.count(True) == 1
    assert store.get("claims/k.json") == f"writer {won.index(True)}".encode()
    assert store.put_if_absent("claims/k.json", b"later") is False
    assert store.get("claims/k.json") == f"writer {won.index(True)}".encode()
    assert store.put_if_absent("claims/other.json", b"x") is True
    leftovers = [p for p in (tmp_path / "b").rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers == []
