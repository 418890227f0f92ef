"""Conditional writes on both blob backends, against the real S3 server (versitygw): what
replicas coordinate with (registry version numbers, retraining starts, counted labels)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from driftloop.blob import BlobStore, FileStore, S3Store
from driftloop.registry import Registry

pytestmark = pytest.mark.integration


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path: Path) -> BlobStore:
    if request.param == "file":
        return FileStore(tmp_path / "blobs")
    s3 = request.getfixturevalue("s3")
    return S3Store(s3.new_bucket(), "driftloop", endpoint_url=s3.endpoint_url,
                   access_key_id=s3.access_key, secret_access_key=s3.secret_key,
                   region="us-east-1")


def test_the_s3_server_honours_if_none_match(s3) -> None:
    """What the S3 backend relies on: a second ``If-None-Match: *`` PUT answers 412."""
    bucket = s3.new_bucket()
    s3.client.put_object(Bucket=bucket, Key="k", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as e:
        s3.client.put_object(Bucket=bucket, Key="k", Body=b"second", IfNoneMatch="*")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert s3.client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"first"


def test_exactly_one_of_many_concurrent_writers_creates_a_key(store: BlobStore) -> None:
    n = 12
    barrier = threading.Barrier(n)

    def claim(i: int) -> bool:
        barrier.wait()
        return store.put_if_absent("claims/one.json", f"writer {i}".encode())

    with ThreadPoolExecutor(n) as pool:
        won = list(pool.map(claim, range(n)))
    assert won.count(True) == 1
    assert store.get("claims/one.json") == f"writer {won.index(True)}".encode()
    assert store.put_if_absent("claims/one.json", b"again") is False
    assert store.put_if_absent("claims/two.json", b"x") is True
    assert list(store.list("claims/")) == ["claims/one.json", "claims/two.json"]


def test_concurrent_registrations_get_distinct_versions(store: BlobStore) -> None:
    registry = Registry(store)
    registry.register("faces", {"model.json": b'{"v": 0}'})
    n = 8
    barrier = threading.Barrier(n)

    def register(i: int) -> str:
        barrier.wait()
        return registry.register("faces", {"model.json": f'{{"writer": {i}}}'.encode()},
                                 lineage={"writer": i}).version

    with ThreadPoolExecutor(n) as pool:
        versions = list(pool.map(register, range(n)))
    assert sorted(versions, key=int) == [str(v) for v in range(2, n + 2)]
    assert registry.versions("faces") == [str(v) for v in range(1, n + 2)]
    for writer, version in enumerate(versions):  # nothing overwritten
        assert registry.get("faces", version).lineage == {"writer": writer}
        assert registry.artifact("faces", version)["model.json"] == (
            f'{{"writer": {writer}}}'.encode())
