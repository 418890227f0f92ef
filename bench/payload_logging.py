"""Payload logging overhead: one served model with its inputs kept and not, in one run.

Run with the main environment (MLServer runs in ``.venv-serving``):

    .venv/bin/python bench/payload_logging.py [--n 400] [--out-json FILE]

One MLServer serves digits from a registry in a temporary folder. The model's policy file
is switched between ``inputs: {mode: all}`` and ``{mode: none}`` every block of requests
(the runtime re-reads it when it changes; the first request of a block is not counted),
so both sides run in the same process, alternating, and load from elsewhere hits both
alike. Prediction events are on (their Kafka is unreachable, alike on both sides). The
difference is what keeping the input costs a request: the policy lookup, the content
hash, the queue put, and the writer process competing for the CPU. Figures:
p50 of each side, the ratio of the p50s, and the median over adjacent block pairs of the
difference of their p50s; the server's CPU per request (its tree, the writer process
included, from /proc); also ``offer`` alone in-process (p50, p99) for a 64-value
tensor and a 200 KB image. ``bench/serving.py --payload-logging`` runs this too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from driftloop.blob import open_store
from driftloop.local.process import free_port
from driftloop.registry import Registry
from driftloop.serving.bootstrap import ensure_models
from driftloop.serving.client import V2Client
from driftloop.serving.server import MLServerProcess
from driftloop.settings import Settings

__all__ = ["main", "measure"]


BLOCK = 10
"""Requests per block between policy switches."""
PAUSE_S = 0.2
"""Pause after each block (both kinds), so background writes do not spill into the next."""


def _policy(folder: Path, mode: str) -> None:
    (folder / "digits.yaml").write_text(f"model: digits\ninputs:\n  mode: {mode}\n")


def _offer_us(n: int) -> dict[str, float]:
    from prometheus_client import CollectorRegistry

    from driftloop.blob import FileStore
    from driftloop.inputlog import InputLogging
    from driftloop.serving.payloads import PayloadLogger

    with tempfile.TemporaryDirectory() as tmp:
        logger = PayloadLogger(
            lambda: FileStore(Path(tmp)), registry=CollectorRegistry(), maxsize=n * 2 + 10
        )
        cfg = InputLogging()
        out: dict[str, float] = {}
        rng = np.random.default_rng(0)
        cases: dict[str, dict[str, Any]] = {
            "tensor_64": {"tensor": rng.random((1, 64)).astype(np.float32)},
            "image_200kb": {"media": b"\x89PNG\r\n\x1a\n" + rng.bytes(200_000)},
        }
        for name, kw in cases.items():
            ts = []
            for i in range(n):
                t = time.perf_counter()
                logger.offer("digits", f"{name}-{i}", cfg, **kw)
                ts.append((time.perf_counter() - t) * 1e6)
            out[f"offer_{name}_p50_us"] = statistics.median(ts)
            out[f"offer_{name}_p99_us"] = float(np.percentile(ts, 99))
        logger.close(30)
    return out


def measure(n: int = 400) -> dict[str, Any]:
    """Figures of one run (see the module docstring); ``n`` requests per side."""
    from sklearn.datasets import load_digits

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.proc_cpu import tree_cpu_s

    x = load_digits().data
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        blob_url = (folder / "blobs").as_uri()
        policies = folder / "policies"
        policies.mkdir()
        _policy(policies, "none")
        settings = Settings(
            state_dir=folder,
            kafka_bootstrap=f"127.0.0.1:{free_port()}",
            blob_url=blob_url,
            serving_models="digits",
            policy_dir=policies,
            serving_http_port=free_port(),
            serving_grpc_port=free_port(),
            serving_metrics_port=free_port(),
        )
        store = open_store(blob_url, settings)
        ensure_models(Registry(store), ["digits"])
        server = MLServerProcess(settings, folder / "server", folder / "mlserver.log")
        server.start()
        blocks: dict[str, list[list[float]]] = {"all": [], "none": []}
        cpu: dict[str, list[float]] = {"all": [], "none": []}
        try:
            with V2Client(server.url) as client:
                for i in range(20):  # warm up
                    client.infer_tensor("digits", [x[i].tolist()])
                i = 0
                for k in range(2 * max(1, n // BLOCK)):
                    mode = ("all", "none")[(k // 2 + k) % 2]  # all none none all all none
                    _policy(policies, mode)
                    times = []
                    client.infer_tensor("digits", [x[i % len(x)].tolist()])  # re-reads it
                    cpu0 = tree_cpu_s(server.pid or 0)
                    for _ in range(BLOCK):
                        row = [x[i % len(x)].tolist()]
                        i += 1
                        t = time.perf_counter()
                        client.infer_tensor("digits", row)
                        times.append((time.perf_counter() - t) * 1000.0)
                    time.sleep(PAUSE_S)  # the writer drains before the next block...
                    cpu[mode].append((tree_cpu_s(server.pid or 0) - cpu0) / BLOCK)
                    blocks[mode].append(times)  # ...its CPU counted with the block
            time.sleep(1.0)
            kept = len(list(store.list("inputs/model=digits/")))
        finally:
            server.stop()
    on = [t for b in blocks["all"] for t in b]
    off = [t for b in blocks["none"] for t in b]
    pairs = [
        statistics.median(a) - statistics.median(b)
        for a, b in zip(blocks["all"], blocks["none"], strict=True)
    ]
    p50_on, p50_off = statistics.median(on), statistics.median(off)
    return {
        "bench": "payload_logging",
        "n": len(on),
        "p50_ms_without": p50_off,
        "p50_ms_with": p50_on,
        "overhead_ms_median_pair": statistics.median(pairs),
        "ratio_p50": p50_on / p50_off,
        "inputs_kept": kept,
        "server_cpu_ms_per_request_without": 1000 * sum(cpu["none"]) / len(cpu["none"]),
        "server_cpu_ms_per_request_with": 1000 * sum(cpu["all"]) / len(cpu["all"]),
        "load_1m": os.getloadavg()[0],
        **_offer_us(2000),
    }


def report(fig: dict[str, Any]) -> str:
    return (
        f"payload logging (digits, V2 REST, {fig['n']} requests per side in blocks of {BLOCK}, "
        f"{fig['inputs_kept']} inputs kept, load {fig['load_1m']:.1f})\n"
        f"  p50 without {fig['p50_ms_without']:.3f} ms | with {fig['p50_ms_with']:.3f} ms"
        f" | ratio {fig['ratio_p50']:.3f}x | added (median of block-pair p50 differences) "
        f"{fig['overhead_ms_median_pair']:+.3f} ms (goal <= 0.5 ms)\n"
        f"  server CPU per request (MLServer and its writer process, all blocks): without "
        f"{fig['server_cpu_ms_per_request_without']:.3f} ms | with "
        f"{fig['server_cpu_ms_per_request_with']:.3f} ms\n"
        f"  offer() in-process: 64-value tensor p50 {fig['offer_tensor_64_p50_us']:.1f} us"
        f" (p99 {fig['offer_tensor_64_p99_us']:.1f}); 200 KB image p50 "
        f"{fig['offer_image_200kb_p50_us']:.1f} us (p99 "
        f"{fig['offer_image_200kb_p99_us']:.1f})"
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
