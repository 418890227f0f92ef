"""Shadow overhead: the champion's answers with a challenger in shadow and without, in one run.

Run with the main environment (MLServer runs in ``.venv-serving``):

    .venv/bin/python bench/shadow.py [--n 400] [--out-json FILE]

One MLServer serves digits v1 (champion) from a registry in a temporary folder; v2 is a
second digits model. Every block of requests the registry's traffic is switched between
``shadow`` (v2 answers a mirrored copy of each request, after v1 answered, in its own
low-priority thread) and no challenger, and the server reloads (the first request after
the reload is not counted), so both sides run in the same process, alternating, and load
from elsewhere hits both alike. The client is one app sending requests back to back, as
in ``bench/serving.py``. Figures: the champion's p50 on each side, their ratio, the
median over adjacent block pairs of the difference of their p50s, and how many mirrored
requests the shadow answered (from the server's metrics).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from driftloop.blob import open_store
from driftloop.local.process import free_port
from driftloop.registry import Registry
from driftloop.serving.bootstrap import ensure_models
from driftloop.serving.client import V2Client
from driftloop.serving.server import MLServerProcess
from driftloop.settings import Settings

__all__ = ["main", "measure"]

BLOCK = 20
"""Requests per block between switches."""
PAUSE_S = 0.2
"""Pause after each block, so the shadow's backlog does not spill into the next block."""


def _shadow_answers(metrics_url: str, version: str) -> float:
    text = httpx.get(metrics_url, timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("driftloop_model_requests_total{") and f'version="{version}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def measure(n: int = 400) -> dict[str, Any]:
    """Figures of one run (see the module docstring); ``n`` requests per side."""
    from driftloop.serving.models import digits

    data = digits.load_dataset()
    x = data.X
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        blob_url = (folder / "blobs").as_uri()
        settings = Settings(
            state_dir=folder,
            kafka_bootstrap=f"127.0.0.1:{free_port()}",
            blob_url=blob_url,
            serving_models=("digits",),
            policy_dir=folder / "policies",
            serving_http_port=free_port(),
            serving_grpc_port=free_port(),
            serving_metrics_port=free_port(),
        )
        store = open_store(blob_url, settings)
        registry = Registry(store)
        ensure_models(registry, ["digits"])
        train, _ = digits.split(data)
        challenger = registry.register(
            "digits", digits.train(train, {"kind": "logreg", "C": 0.5}), lineage={"bench": 1}
        ).version
        registry.set_alias("digits", "challenger", challenger, reason="bench")
        server = MLServerProcess(settings, folder / "server", folder / "mlserver.log")
        server.start()
        blocks: dict[str, list[list[float]]] = {"shadow": [], "off": []}
        try:
            with V2Client(server.url) as client:
                for i in range(20):  # warm up
                    client.infer_tensor("digits", [x[i].tolist()])
                i = 0
                for k in range(2 * max(1, n // BLOCK)):
                    side = ("shadow", "off")[(k // 2 + k) % 2]  # shadow off off shadow ...
                    registry.set_challenger_weight(
                        "digits", 0, mode="shadow" if side == "shadow" else "canary"
                    )
                    client.load("digits")
                    client.infer_tensor("digits", [x[i % len(x)].tolist()])  # not counted
                    times = []
                    for _ in range(BLOCK):
                        row = [x[i % len(x)].tolist()]
                        i += 1
                        t = time.perf_counter()
                        answer = client.infer_tensor("digits", row)
                        times.append((time.perf_counter() - t) * 1000.0)
                        if answer.version != "1":
                            raise RuntimeError(f"v{answer.version} answered the app")
                    time.sleep(PAUSE_S)
                    blocks[side].append(times)
            time.sleep(0.5)
            shadowed = _shadow_answers(server.metrics_url, challenger)
        finally:
            server.stop()
    on = [t for b in blocks["shadow"] for t in b]
    off = [t for b in blocks["off"] for t in b]
    pairs = [
        statistics.median(a) - statistics.median(b)
        for a, b in zip(blocks["shadow"], blocks["off"], strict=True)
    ]
    p50_on, p50_off = statistics.median(on), statistics.median(off)
    return {
        "bench": "shadow",
        "n": len(on),
        "p50_ms_without": p50_off,
        "p50_ms_with": p50_on,
        "ratio_p50": p50_on / p50_off,
        "added_ms_median_pair": statistics.median(pairs),
        "shadow_answers": shadowed,
        "load_1m": os.getloadavg()[0],
    }


def report(fig: dict[str, Any]) -> str:
    return (
        f"shadow (digits v1 champion, v2 in shadow; V2 REST, {fig['n']} requests per side in "
        f"blocks of {BLOCK}; {fig['shadow_answers']:.0f} mirrored requests answered by the "
        f"shadow; load {fig['load_1m']:.1f})\n"
        f"  champion p50 without shadow {fig['p50_ms_without']:.3f} ms | with "
        f"{fig['p50_ms_with']:.3f} ms | ratio {fig['ratio_p50']:.3f}x | added (median of "
        f"block-pair p50 differences) {fig['added_ms_median_pair']:+.3f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400, help="requests per side")
    ap.add_argument("--out-json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    fig = measure(args.n)
    print(report(fig))
    if args.out_json:
        Path(args.out_json).write_text(json.dumps(fig, indent=1))


if __name__ == "__main__":
    main()
