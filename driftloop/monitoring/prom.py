"""A small client for the Prometheus HTTP API (instant queries, alerts, targets)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from driftloop.errors import BadRequest, Unavailable
from driftloop.events import media


@dataclass(frozen=True)
class Sample:
    """One series of an instant-vector result."""

    labels: dict[str, str]
    value: float


class PrometheusClient:
    """Reads from Prometheus; every failure is ``Unavailable`` or ``BadRequest`` (bad PromQL)."""

    def __init__(self, base_url: str, *, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        try:
            r = self._http.get(path, params=params)
        except httpx.HTTPError as e:
            raise Unavailable(f"Prometheus at {self.base_url} unavailable: {e}") from e
        body = r.json() if media.is_json(r.headers.get("content-type")) else {}
        if r.status_code == 400 or body.get("errorType") == "bad_data":
            raise BadRequest(f"Prometheus rejected the query: {body.get('error', r.text)}")
        if r.status_code != 200 or body.get("status") != "success":
            raise Unavailable(f"Prometheus answered {r.status_code}: {body.get('error', r.text)}")
        return body["data"]

    def ready(self) -> bool:
        try:
            return self._http.get("/-/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, promql: str) -> list[Sample]:
        """Instant query; scalars come back as one sample without labels."""
        data = self._get("/api/v1/query", {"query": promql})
        if data["resultType"] == "vector":
            return [Sample(dict(s["metric"]), float(s["value"][1])) for s in data["result"]]
        if data["resultType"] == "scalar":
            return [Sample({}, float(data["result"][1]))]
        raise BadRequest(f"query returned a {data['resultType']}, not an instant vector")

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing) with their labels and state."""
        return list(self._get("/api/v1/alerts")["alerts"])

    def targets(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/targets")["activeTargets"])

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[list[Sample]], bool],
        *,
        timeout_s: float = 30,
        interval_s: float = 0.5,
    ) -> list[Sample]:
        """Poll ``promql`` until ``predicate`` holds; ``TimeoutError`` with the last result."""
        deadline = time.monotonic() + timeout_s
        last: list[Sample] = []
        while True:
            try:
                last = self.query(promql)
                if predicate(last):
                    return last
            except Unavailable:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{promql!r} did not satisfy the condition; last: {last}")
            time.sleep(interval_s)
