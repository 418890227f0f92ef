"""The blob store: ``file:///path`` or ``s3://bucket/prefix`` behind one interface.

Keys are ``/``-separated and relative to the store's root. Every ``put`` is atomic:
a reader sees the old object or the whole new one, never a partial write (a rename on
``file://``; S3 PUTs are atomic by nature).

``put_if_absent`` is the one conditional write, what replicas coordinate with (registry
version numbers, retraining starts, counted labels): exactly one of several concurrent
callers creates the object, the others learn it exists. ``file://`` links a complete
temporary file into place (``link(2)`` fails on an existing name); S3 sends
``If-None-Match: *`` and checks once per store that the server honours it (a server that
ignores the header would let two writers both "win", so conditional writes then fail
with 503 instead). Callers write unique content (a run id, a nonce), so a write whose
answer was lost and that was retried still recognises itself.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, Protocol, TypeVar
from urllib.parse import unquote, urlparse

from driftloop.errors import Unavailable
from driftloop.naming import safe_segment

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from driftloop.settings import Settings

_P = ParamSpec("_P")
_R = TypeVar("_R")


class BlobStore(Protocol):
    """What every backend provides."""

    @property
    def url(self) -> str: ...

    def put(self, key: str, data: bytes) -> None: ...

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if it does not exist; True when this call created it."""
        ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> Iterator[str]: ...

    def delete(self, key: str) -> None: ...


def check_key(key: str) -> str:
    """Reject keys that could escape the store's root or are not plain relative paths."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise ValueError(f"blob key {key!r} must be a non-empty relative path")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"blob key {key!r} must not hold empty, '.' or '..' segments")
    return key


def check_prefix(prefix: str) -> str:
    if prefix:
        check_key(prefix.rstrip("/") or "x")
    return prefix


def partition_key(kind: str, model: str, day: date | str, filename: str) -> str:
    """``<kind>/model=<m>/date=<YYYY-MM-DD>/<file>`` (Hive-style partitions)."""
    d = day.isoformat() if isinstance(day, date) else day
    date.fromisoformat(d)
    return "/".join(
        [safe_segment(kind, field="kind"), f"model={safe_segment(model, field='model')}",
         f"date={d}", check_key(filename)]
    )


class FileStore:
    """A folder on the local filesystem."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _staged(self, path: Path, data: bytes) -> str:
        """A complete, synced temporary file beside ``path`` (never listed)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return tmp

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._staged(path, data)
        try:
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """``link(2)`` of a complete temporary file: atomic, and it fails on an existing
        name, so readers never see a partial object and only one writer wins."""
        path = self._path(key)
        tmp = self._staged(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            Path(tmp).unlink(missing_ok=True)
        return True

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError) as e:
            raise KeyError(key) from e

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[str]:
        check_prefix(prefix)
        # Walk only the deepest folder the prefix names, then filter by the rest.
        folder = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not folder.is_dir():
            return iter(())
        keys = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            for name in filenames:
                if name.startswith(".tmp-"):
                    continue
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return iter(sorted(keys))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3Store:
    """A bucket and prefix on any S3-compatible server (boto3)."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        *,
        endpoint_url: str | None,
        access_key_id: str | None,
        secret_access_key: str | None,
        region: str,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._conditional_ok = False
        self._client: S3Client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 5, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
            ),
        )

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """``fn`` (a method of the S3 client), an unreachable server raised as 503."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except ClientError:
            raise
        except BotoCoreError as e:
            raise Unavailable(f"blob store {self.url} unreachable: {e}") from e

    def put(self, key: str, data: bytes) -> None:
        self._call(self._client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """``PUT`` with ``If-None-Match: *``: 412 means another writer created the key."""
        from botocore.exceptions import ClientError

        full = self._key(key)
        self._check_conditional_writes()
        for attempt in range(CONFLICT_RETRIES):
            try:
                self._call(self._client.put_object, Bucket=self.bucket, Key=full, Body=data,
                           IfNoneMatch="*")
                return True
            except ClientError as e:
                code, status = _error(e)
                if code == "PreconditionFailed" or status == 412:
                    # A retried PUT whose first attempt landed also gets 412: our own
                    # (unique) content at the key means this call created it.
                    try:
                        return self.get(key) == data
                    except KeyError:
                        continue
                if code == "ConditionalRequestConflict" or status == 409:
                    time.sleep(0.05 * 2**attempt)  # a concurrent conditional write in flight
                    continue
                if code == "NotImplemented" or status == 501:
                    raise Unavailable(f"blob store {self.url}: the S3 server does not support "
                                      "conditional writes (If-None-Match)") from e
                raise
        raise Unavailable(f"blob store {self.url}: conditional write of {key!r} kept "
                          "conflicting with concurrent writers")

    def _check_conditional_writes(self) -> None:
        """Once per store: a second ``If-None-Match: *`` PUT of one key must be refused.

        A server that ignores the header answers 200 twice; every caller would then believe
        it won, so conditional writes are refused (503) rather than silently unsafe.
        """
        if self._conditional_ok:
            return
        from botocore.exceptions import ClientError

        probe = self._key(f"_driftloop/conditional-probe/{uuid.uuid4().hex}")
        try:
            put = self._client.put_object
            self._call(put, Bucket=self.bucket, Key=probe, Body=b"1", IfNoneMatch="*")
            self._call(put, Bucket=self.bucket, Key=probe, Body=b"2", IfNoneMatch="*")
        except ClientError as e:
            code, status = _error(e)
            if code != "PreconditionFailed" and status != 412:
                raise Unavailable(f"blob store {self.url}: the S3 server refused a "
                                  f"conditional write ({code or status})") from e
            self._conditional_ok = True
        finally:
            try:
                self._call(self._client.delete_object, Bucket=self.bucket, Key=probe)
            except (ClientError, Unavailable):
                pass
        if not self._conditional_ok:
            raise Unavailable(f"blob store {self.url}: the S3 server ignores If-None-Match, "
                              "so replicas cannot coordinate through it")

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            resp = self._call(self._client.get_object, Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                raise KeyError(key) from e
            raise
        return resp["Body"].read()

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._call(self._client.head_object, Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return False
            raise
        return True

    def list(self, prefix: str = "") -> Iterator[str]:
        check_prefix(prefix)
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        token: str | None = None
        while True:
            list_page = self._client.list_objects_v2
            resp = (
                self._call(list_page, Bucket=self.bucket, Prefix=full, ContinuationToken=token)
                if token
                else self._call(list_page, Bucket=self.bucket, Prefix=full)
            )
            keys.extend(obj["Key"][strip:] for obj in resp.get("Contents", []))
            if not resp.get("IsTruncated"):
                break
            token = resp.get("NextContinuationToken")
        return iter(sorted(k for k in keys if k and not k.endswith("/")))

    def delete(self, key: str) -> None:
        self._call(self._client.delete_object, Bucket=self.bucket, Key=self._key(key))


CONFLICT_RETRIES = 8


def _error(e: Exception) -> tuple[str, int]:
    """(S3 error code, HTTP status) of a botocore ``ClientError``."""
    resp = getattr(e, "response", {}) or {}
    return (str(resp.get("Error", {}).get("Code", "")),
            int(resp.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0))


def open_store(url: str, settings: Settings) -> BlobStore:
    """The store a URL names. S3 credentials and endpoint come from ``settings``."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"blob url {url!r}: file URLs must be file:///absolute/path")
        return FileStore(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"blob url {url!r}: s3 URLs must name a bucket (s3://bucket/prefix)")
        return S3Store(
            parsed.netloc,
            parsed.path,
            endpoint_url=settings.s3_endpoint_url,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=(settings.s3_secret_access_key.get_secret_value()
                               if settings.s3_secret_access_key else None),
            region=settings.s3_region,
        )
    raise ValueError(f"blob url {url!r}: scheme must be file:// or s3://")
