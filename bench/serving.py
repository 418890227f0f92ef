"""Serving overhead: each model through MLServer (V2 REST) against the same model in-process.

Run with the serving environment (it loads the models in-process too):

    .venv-serving/bin/python bench/serving.py [--n 20] [--models digits,faces,ocr,speech]
        [--out-json FILE]

Both sides run in the same run on the same inputs: in-process is decode + predict on the
bytes; served is base64 + JSON + HTTP + MLServer + the same decode + predict. Prediction
events are switched off (header) so the figures are the server's own cost; a registry in
a temporary folder holds version 1 of each model. The two sides alternate request by
request. Figures are medians of the per-request latencies (p50) and the 99th percentile;
the overhead is the median of the per-pair differences; throughput is sequential
requests per second and with 4 concurrent clients.
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from driftloop.blob import open_store
from driftloop.local.process import free_port
from driftloop.registry import Registry
from driftloop.serving import models as model_lib
from driftloop.serving import v2
from driftloop.serving.bootstrap import ensure_models
from driftloop.serving.client import V2Client
from driftloop.serving.server import MLServerProcess
from driftloop.settings import Settings


def inputs(folder: Path) -> dict[str, bytes]:
    from PIL import Image, ImageDraw, ImageFont
    from sklearn.datasets import load_digits

    wav = folder / "s.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", "please call me tomorrow morning",
                    "-o", str(wav)], check=True, capture_output=True)
    font = ImageFont.load_default(size=36)
    line = Image.new("L", (820, 80), 255)
    ImageDraw.Draw(line).text((20, 20), "Invoice 2041 due on March 15", font=font, fill=0)
    rng = np.random.default_rng(0)
    scene = Image.fromarray(rng.integers(0, 255, (512, 512), dtype=np.uint8)).convert("RGB")
    digit = load_digits().data[3].reshape(8, 8)
    digit_img = Image.fromarray((255 - digit / 16 * 255).astype(np.uint8)).resize((64, 64))

    def png(img: Image.Image) -> bytes:
        buf = io.BytesIO()
        img.save(buf, "PNG")
        return buf.getvalue()

    return {"speech": wav.read_bytes(), "ocr": png(line), "faces": png(scene),
            "digits": png(digit_img)}


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def interleaved(fa, fb, n: int) -> tuple[list[float], list[float]]:
    """Alternate the two sides request by request, so load from elsewhere hits both alike."""
    a, b = [], []
    for _ in range(n):
        for fn, out in ((fa, a), (fb, b)):
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1000.0)
    return a, b


def concurrent_rps(fn, n: int, workers: int = 4) -> float:
    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda _: fn(), range(n)))
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20,
                    help="requests per model and side (x10 for digits)")
    ap.add_argument("--models", default="digits,faces,ocr,speech")
    ap.add_argument("--out-json", help="also write the figures to this JSON file")
    ap.add_argument("--payload-logging", action="store_true",
                    help="also measure what keeping each input adds (bench/payload_logging.py)")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.proc_cpu import tree_cpu_s
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        settings = Settings(state_dir=folder, kafka_bootstrap=f"127.0.0.1:{free_port()}",
                            serving_http_port=free_port(), serving_grpc_port=free_port(),
                            serving_metrics_port=free_port(), serving_models=args.models)
        names = settings.serving_model_list
        registry = Registry(open_store(settings.resolved_blob_url, settings))
        champions = ensure_models(registry, names)
        data = inputs(folder)
        local = {m: model_lib.load(m, registry.artifact(m, champions[m])) for m in names}
        server = MLServerProcess(settings, folder / "server", folder / "mlserver.log")
        t0 = time.perf_counter()
        server.start()
        print(f"MLServer start-up with {len(names)} models: {time.perf_counter() - t0:.1f} s")
        rows = []
        server_cpu: dict[str, float] = {}
        try:
            with V2Client(server.url) as client:
                for m in names:
                    body = v2.media_request(data[m])

                    def served(m: str = m, body: dict = body) -> None:
                        client.infer_request(m, body, emit=False)

                    def inproc(m: str = m) -> None:
                        local[m].predict(data[m], None)

                    for _ in range(3):  # warm both sides
                        served()
                        inproc()
                    n = args.n * 10 if m == "digits" else args.n
                    a, b = interleaved(inproc, served, n)
                    in_rps = concurrent_rps(inproc, n)
                    cpu0 = tree_cpu_s(server.pid or 0)
                    rows.append((m, n, a, b, in_rps, concurrent_rps(served, n)))
                    server_cpu[m] = (tree_cpu_s(server.pid or 0) - cpu0) / n
        finally:
            server.stop()
    print("\nlatency in ms (p50 / p99), throughput in requests/s (sequential | 4 concurrent)")
    print("overhead = median over request pairs of (served - in-process), robust to load "
          "from elsewhere")
    print(f"{'model':8} {'n':>4} {'in-process':>17} {'MLServer':>17} {'overhead':>11} "
          f"{'ratio p50':>9} {'rps in-proc':>15} {'rps served':>15}")
    for m, n, a, b, ca, cb in rows:
        pa, pb = statistics.median(a), statistics.median(b)
        over = statistics.median([y - x for x, y in zip(a, b, strict=True)])
        print(f"{m:8} {n:4d} {pa:7.2f} / {pct(a, 99):7.2f} {pb:7.2f} / {pct(b, 99):7.2f} "
              f"{over:8.2f} ms {pb / pa:8.2f}x {1000 / pa:6.1f} | {ca:6.1f} "
              f"{1000 / pb:6.1f} | {cb:6.1f}")
    logging_fig = None
    if args.payload_logging:
        from bench.payload_logging import measure, report

        logging_fig = measure(args.n * 20)
        print("\n" + report(logging_fig))
    if args.out_json:
        import json
        import os

        # Requests per core-second: requests over the CPU seconds MLServer (all its
        # processes) spent on the 4-concurrent run, robust to other load on the machine.
        Path(args.out_json).write_text(json.dumps({
            "bench": "serving", "load_1m": os.getloadavg()[0], "cpus": os.cpu_count(),
            "args": vars(args), "models": {
                m: {"n": n, "p50_ms_inproc": statistics.median(a),
                    "p50_ms_served": statistics.median(b), "p99_ms_served": pct(b, 99),
                    "rps_served_sequential": 1000 / statistics.median(b),
                    "rps_served_4_concurrent": cb,
                    "server_cpu_ms_per_request": 1000 * server_cpu[m],
                    "rps_per_core": 1 / max(server_cpu[m], 1e-9)}
                for m, n, a, b, _, cb in rows}, "payload_logging": logging_fig}, indent=1))


if __name__ == "__main__":
    main()
