"""Shadow overhead: the champion's answers with a challenger in shadow and without, in one run.

Run with the main environment (MLServer runs in ``.venv-serving``):

    .venv/bin/python bench/shadow.py [--n 400] [--out-json FILE]

One MLServer serves digits v1 (champion) from a registry in a temporary folder; v2 is a
second digits model. Two servers run side by side on the same machine, each with its own
registry: one with v2 in shadow (v2 answers a mirrored copy of every request, after v1
answered, in a child process at the lowest priority; the bench waits until it answers),
one without. Requests alternate between them pair by pair (the order swapping each
pair), so load from elsewhere hits both alike; the client is one app sending requests
back to back, as in ``bench/serving.py``. Figures: the champion's p50 on each side, their
ratio, the median of the pair differences, and how many mirrored requests the shadow
answered (server metrics).
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


def _shadow_answers(metrics_url: str, version: str) -> float:
    text = httpx.get(metrics_url, timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("driftloop_model_requests_total{") and f'version="{version}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _server(folder: Path, *, shadow: bool) -> tuple[MLServerProcess, str]:
    """digits v1 served from a registry of its own; v2 in shadow when ``shadow``."""
    from driftloop.serving.models import digits

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
    registry = Registry(open_store(blob_url, settings))
    ensure_models(registry, ["digits"])
    train, _ = digits.split(digits.load_dataset())
    challenger = registry.register(
        "digits", digits.train(train, {"kind": "logreg", "C": 0.5}), lineage={"bench": 1}
    ).version
    if shadow:
        registry.set_alias("digits", "challenger", challenger, reason="bench")
        registry.set_challenger_weight("digits", 0, mode="shadow")
    server = MLServerProcess(settings, folder / "server", folder / "mlserver.log")
    server.start()
    return server, challenger


def measure(n: int = 400, *, aa: bool = False) -> dict[str, Any]:
    """Figures of one run (see the module docstring); ``n`` requests per side. ``aa``: no
    shadow on either server (what two servers differ by alone, for calibration)."""
    from driftloop.serving.models import digits

    x = digits.load_dataset().X
    with tempfile.TemporaryDirectory() as tmp:
        with_shadow, challenger = _server(Path(tmp) / "shadow", shadow=not aa)
        without, _ = _server(Path(tmp) / "plain", shadow=False)
        times: dict[str, list[float]] = {"shadow": [], "off": []}
        try:
            with V2Client(with_shadow.url) as a, V2Client(without.url) as b:
                clients = {"shadow": a, "off": b}
                deadline = time.monotonic() + 120
                for i in range(20):  # warm up both; the shadow's process loads v2
                    a.infer_tensor("digits", [x[i].tolist()])
                    b.infer_tensor("digits", [x[i].tolist()])
                while not aa and _shadow_answers(with_shadow.metrics_url, challenger) < 20:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the shadow never answered")
                    a.infer_tensor("digits", [x[0].tolist()])
                    time.sleep(0.5)
                base = _shadow_answers(with_shadow.metrics_url, challenger)
                for i in range(n):
                    row = [x[i % len(x)].tolist()]
                    for side in ("shadow", "off") if i % 2 == 0 else ("off", "shadow"):
                        t = time.perf_counter()
                        answer = clients[side].infer_tensor("digits", row)
                        times[side].append((time.perf_counter() - t) * 1000.0)
                        if answer.version != "1":
                            raise RuntimeError(f"v{answer.version} answered the app")
                time.sleep(1.0)
                shadowed = _shadow_answers(with_shadow.metrics_url, challenger) - base
        finally:
            with_shadow.stop()
            without.stop()
    on, off = times["shadow"], times["off"]
    p50_on, p50_off = statistics.median(on), statistics.median(off)
    return {
        "bench": "shadow-aa" if aa else "shadow",
        "n": len(on),
        "p50_ms_without": p50_off,
        "p50_ms_with": p50_on,
        "ratio_p50": p50_on / p50_off,
        "added_ms_median_pair": statistics.median(a - b for a, b in zip(on, off, strict=True)),
        "shadow_answers": shadowed,
        "load_1m": os.getloadavg()[0],
    }


def report(fig: dict[str, Any]) -> str:
    return (
        f"shadow (digits v1 champion, v2 in shadow; V2 REST, two servers, {fig['n']} "
        f"requests each, alternating; {fig['shadow_answers']:.0f} mirrored requests answered "
        f"by the shadow; load {fig['load_1m']:.1f})\n"
        f"  champion p50 without shadow {fig['p50_ms_without']:.3f} ms | with "
        f"{fig['p50_ms_with']:.3f} ms | ratio {fig['ratio_p50']:.3f}x | added (median of "
        f"pair differences) {fig['added_ms_median_pair']:+.3f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400, help="requests per side")
    ap.add_argument("--out-json", help="also write the figures to this JSON file")
    ap.add_argument("--aa", action="store_true", help="calibration: no shadow on either server")
    args = ap.parse_args()
    fig = measure(args.n, aa=args.aa)
    print(report(fig))
    if args.out_json:
        Path(args.out_json).write_text(json.dumps(fig, indent=1))


if __name__ == "__main__":
    main()
