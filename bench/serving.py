"""Serving overhead per model family and request path, against the same model in-process.

Run with the serving environment (it loads the models in-process too):

    .venv-serving/bin/python bench/serving.py [--n 20] [--models digits,faces,ocr,speech,objects]
        [--clients 8] [--rps-n 2000] [--out-json FILE]

All sides run in the same run on the same inputs, interleaved request by request (load
from elsewhere hits every side alike): in-process is decode + predict on the bytes; the
served paths add the transport, MLServer and the same decode + predict:

- ``json``: V2 JSON with the file base64 inside (``parameters.content_type: base64``);
- ``binary_rest``: the file itself as the body of ``/v2/models/<m>/infer``
  (``Content-Type: image/png``...; ``seldon.runtimes.binary``);
- ``grpc_raw``: V2 gRPC with the file in ``raw_input_contents``;
- ``floor``: the JSON path's request body to a plain MLServer serving a model that does
  nothing (``bench/serving_floor.py``): what MLServer costs by itself here, so the part of
  each overhead that driftloop's runtimes add is what lies above it.

Prediction events are switched off (header) so the figures are the server's own cost; a
registry in a temporary folder holds version 1 of each model. Latency figures are medians
(p50) and 99th percentiles; the overhead of a path is the median of its per-round
differences to the in-process call of the same round. Throughput: digits with
``--clients`` concurrent clients per path (each client its own connection), with
MLServer's adaptive batching off, then on (``--batch-size``/``--batch-time-ms``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from driftloop.blob import open_store
from driftloop.local.process import free_port, stop_pid
from driftloop.registry import Registry
from driftloop.serving import models as model_lib
from driftloop.serving import v2
from driftloop.serving.bootstrap import ensure_models
from driftloop.serving.client import V2Client
from driftloop.serving.grpc_client import GrpcV2Client
from driftloop.serving.server import VENV, MLServerProcess, ready, server_env
from driftloop.settings import Settings

PATHS = ("json", "binary_rest", "grpc_raw")


def inputs(folder: Path) -> dict[str, bytes]:
    from PIL import Image, ImageDraw, ImageFont
    from sklearn.datasets import load_digits

    wav = folder / "s.wav"
    subprocess.run(
        ["flite", "-voice", "slt", "-t", "please call me tomorrow morning", "-o", str(wav)],
        check=True,
        capture_output=True,
    )
    font = ImageFont.load_default(size=36)
    line = Image.new("L", (820, 80), 255)
    ImageDraw.Draw(line).text((20, 20), "Invoice 2041 due on March 15", font=font, fill=0)
    rng = np.random.default_rng(0)
    scene = Image.fromarray(rng.integers(0, 255, (512, 512), dtype=np.uint8)).convert("RGB")
    street = Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    digit = load_digits().data[3].reshape(8, 8)
    digit_img = Image.fromarray((255 - digit / 16 * 255).astype(np.uint8)).resize((64, 64))

    def encoded(img: Image.Image, fmt: str = "PNG") -> bytes:
        buf = io.BytesIO()
        img.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        return buf.getvalue()

    return {
        "speech": wav.read_bytes(),
        "ocr": encoded(line),
        "faces": encoded(scene),
        "objects": encoded(street, "JPEG"),
        "digits": encoded(digit_img),
    }


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def interleaved(
    sides: dict[str, Callable[[], object]], n: int, server_s: Callable[[], float]
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Every side once per round, in turn, so load from elsewhere hits all alike.

    Also, for each served request, its overhead measured on its own: the client's latency
    less the model's time inside the server (``server_s``: the runtime's latency sum for
    this model, read after every request; sequential requests, so the difference is this
    request's decode + predict). Unlike a difference to the in-process call, it holds
    when the model's own time varies by hundreds of ms under load from elsewhere.
    """
    out: dict[str, list[float]] = {k: [] for k in sides}
    own: dict[str, list[float]] = {k: [] for k in sides if k != "inproc"}
    before = server_s()
    for _ in range(n):
        for name, fn in sides.items():
            t = time.perf_counter()
            fn()
            ms = (time.perf_counter() - t) * 1000.0
            out[name].append(ms)
            if name != "inproc":
                after = server_s()
                own[name].append(ms - (after - before) * 1000.0)
                before = after
    return out, own


def latency_sum(metrics_url: str, model: str) -> Callable[[], float]:
    """Seconds the runtime spent in ``model``'s decode + predict so far (its histogram's sum)."""
    pattern = re.compile(
        r'^driftloop_model_latency_seconds_sum\{[^}]*model="'
        + re.escape(model)
        + r'"[^}]*\} (\S+)$',
        re.M,
    )
    http = httpx.Client(timeout=30)

    def read() -> float:
        return sum(float(v) for v in pattern.findall(http.get(metrics_url).text))

    return read


def concurrent_rps(make: Callable[[], Callable[[], object]], n: int, workers: int) -> float:
    """Requests per second of ``workers`` clients (each made by ``make``, own connection)."""
    calls = [make() for _ in range(workers)]
    for call in calls:
        call()  # connect and warm
    per = n // workers

    def run(call: Callable[[], object]) -> None:
        for _ in range(per):
            call()

    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(run, calls))
    return per * workers / (time.perf_counter() - t)


def batched_digits_rps(
    settings: Settings,
    folder: Path,
    args: argparse.Namespace,
) -> dict[str, float]:
    """Digits req/s with MLServer's adaptive batching on (``MLSERVER_MODEL_MAX_BATCH_*``
    for a server of its own), numeric tensors only: MLServer joins ``BYTES`` inputs by
    concatenating their bytes, keeps one request's headers for a whole batch and cannot
    split scalar outputs, so driftloop does not enable it (ids and events would be wrong):
    this measures what it would buy, with two-row tensors. Events off, as everywhere here."""
    from sklearn.datasets import load_digits

    from driftloop.serving import server as server_lib

    base_env = server_lib.server_env

    def with_batching(s: Settings) -> dict[str, str]:
        return {
            **base_env(s),
            "MLSERVER_MODEL_MAX_BATCH_SIZE": str(args.batch_size),
            "MLSERVER_MODEL_MAX_BATCH_TIME": str(args.batch_time_ms / 1000.0),
        }

    # Two rows a request: a one-row answer carries scalar outputs (``label``), whose
    # parameters MLServer's batch splitter cannot split ('bool' object is not iterable).
    row = load_digits().data[3:5].tolist()
    s2 = settings.model_copy(
        update={
            "serving_models": "digits",
            "serving_http_port": free_port(),
            "serving_grpc_port": free_port(),
            "serving_metrics_port": free_port(),
        }
    )
    server_lib.server_env = with_batching  # type: ignore[assignment]
    try:
        server = MLServerProcess(s2, folder / "server-batched", folder / "batched.log").start()
    finally:
        server_lib.server_env = base_env  # type: ignore[assignment]
    target = f"127.0.0.1:{s2.serving_grpc_port}"

    def grpc_tensor() -> Callable[[], object]:
        c = GrpcV2Client(target)
        return lambda: c.infer_tensor("digits", row, emit=False)

    def json_tensor() -> Callable[[], object]:
        c, b = V2Client(server.url), v2.tensor_request(row)
        return lambda: c.infer_request("digits", b, emit=False)

    out: dict[str, float] = {}
    try:
        for path, make in (("grpc_raw_tensor", grpc_tensor), ("json_tensor", json_tensor)):
            out[path] = concurrent_rps(make, args.rps_n, args.clients)
            print(
                f"digits {args.clients} clients, adaptive batching (max {args.batch_size}, "
                f"{args.batch_time_ms:g} ms) {path}: {out[path]:.0f} req/s",
                flush=True,
            )
    finally:
        server.stop()
    return out


def start_floor(folder: Path, settings: Settings) -> tuple[str, subprocess.Popen[bytes]]:
    """The floor server (``bench/serving_floor.py``), ready."""
    from bench import serving_floor

    http_port = free_port()
    config = serving_floor.write_config(folder / "floor", http_port, free_port(), free_port())
    root = Path(__file__).resolve().parent.parent
    proc = serving_floor.start(VENV, root, config, folder / "floor.log", server_env(settings))
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 120
    while not ready(url, [serving_floor.MODEL]):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_pid(proc.pid)
            raise RuntimeError(f"the floor server did not start; see {folder / 'floor.log'}")
        time.sleep(0.5)
    return url, proc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20, help="rounds per model (x10 for digits)")
    ap.add_argument("--models", default="digits,faces,ocr,speech,objects")
    ap.add_argument("--clients", type=int, default=8, help="concurrent digits clients")
    ap.add_argument("--rps-n", type=int, default=1600, help="digits requests per rps run")
    ap.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="adaptive batching's max_batch_size for the batched digits run (1: skip it)",
    )
    ap.add_argument(
        "--batch-time-ms", type=float, default=2.0, help="adaptive batching's max_batch_time"
    )
    ap.add_argument("--out-json", help="also write the figures to this JSON file")
    ap.add_argument(
        "--payload-logging",
        action="store_true",
        help="also measure what keeping each input adds (bench/payload_logging.py)",
    )
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench import serving_floor
    from bench.proc_cpu import tree_cpu_s

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        settings = Settings(
            state_dir=folder,
            kafka_bootstrap=f"127.0.0.1:{free_port()}",
            serving_http_port=free_port(),
            serving_grpc_port=free_port(),
            serving_metrics_port=free_port(),
            serving_models=args.models,
        )
        names = settings.serving_model_list
        registry = Registry(open_store(settings.resolved_blob_url, settings))
        champions = ensure_models(registry, names)
        data = inputs(folder)
        local = {m: model_lib.load(m, registry.artifact(m, champions[m])) for m in names}
        server = MLServerProcess(settings, folder / "server", folder / "mlserver.log")
        t0 = time.perf_counter()
        server.start()
        print(f"MLServer start-up with {len(names)} models: {time.perf_counter() - t0:.1f} s")
        floor_url, floor_proc = start_floor(folder, settings)
        floor_http = httpx.Client(base_url=floor_url, timeout=30)
        grpc_target = f"127.0.0.1:{settings.serving_grpc_port}"
        lat: dict[str, dict[str, list[float]]] = {}
        own: dict[str, dict[str, list[float]]] = {}
        rps: dict[str, float] = {}
        cpu_ms: dict[str, float] = {}
        try:
            with V2Client(server.url) as client, GrpcV2Client(grpc_target) as grpc_client:
                for m in names:
                    x = data[m]
                    body = v2.media_request(x)
                    sides: dict[str, Callable[[], object]] = {
                        "inproc": lambda m=m, x=x: local[m].predict(x, None),
                        "json": lambda m=m, b=body: client.infer_request(m, b, emit=False),
                        "binary_rest": lambda m=m, x=x: client.infer_binary(m, x, emit=False),
                        "grpc_raw": lambda m=m, x=x: grpc_client.infer_bytes(m, x, emit=False),
                        "floor": lambda b=body: floor_http.post(
                            f"/v2/models/{serving_floor.MODEL}/infer", json=b
                        ).raise_for_status(),
                    }
                    for fn in sides.values():  # warm every side
                        for _ in range(3):
                            fn()
                    lat[m], own[m] = interleaved(
                        sides,
                        args.n * 10 if m == "digits" else args.n,
                        latency_sum(server.metrics_url, m),
                    )
                    print(
                        f"{m}: "
                        + ", ".join(
                            f"{k} {statistics.median(v):.2f} ms" for k, v in lat[m].items()
                        ),
                        flush=True,
                    )
                if "digits" in names:
                    d = data["digits"]
                    url = server.url

                    def json_client() -> Callable[[], object]:
                        c, b = V2Client(url), v2.media_request(d)
                        return lambda: c.infer_request("digits", b, emit=False)

                    def binary_client() -> Callable[[], object]:
                        c = V2Client(url)
                        return lambda: c.infer_binary("digits", d, emit=False)

                    def grpc_raw_client() -> Callable[[], object]:
                        c = GrpcV2Client(grpc_target)
                        return lambda: c.infer_bytes("digits", d, emit=False)

                    makers = {
                        "json": json_client,
                        "binary_rest": binary_client,
                        "grpc_raw": grpc_raw_client,
                    }
                    for path, make in makers.items():
                        cpu0 = tree_cpu_s(server.pid or 0)
                        rps[path] = concurrent_rps(make, args.rps_n, args.clients)
                        cpu_ms[path] = 1000 * (tree_cpu_s(server.pid or 0) - cpu0) / args.rps_n
                        print(
                            f"digits {args.clients} clients {path}: {rps[path]:.0f} req/s, "
                            f"server {cpu_ms[path]:.2f} ms CPU/request",
                            flush=True,
                        )
        finally:
            server.stop()
            floor_http.close()
            stop_pid(floor_proc.pid)
        batched: dict[str, float] = {}
        if "digits" in names and args.batch_size > 1:
            batched = batched_digits_rps(settings, folder, args)
    p50 = {m: {k: statistics.median(v) for k, v in sides.items()} for m, sides in lat.items()}
    over = {
        m: {
            path: statistics.median([y - x for x, y in zip(s["inproc"], s[path], strict=True)])
            for path in PATHS
        }
        for m, s in lat.items()
    }
    timed = {m: {p: statistics.median(own[m][p]) for p in PATHS} for m in own}
    floor = {m: statistics.median(lat[m]["floor"]) for m in lat}
    print(
        "\nlatency p50 in ms. over: median over requests of (client latency - the model's "
        "decode + predict inside the server); vs-inproc: median over rounds of (path - "
        "in-process call), swamped by the model's own variance under load for slow models"
    )
    print(
        f"{'model':8} {'in-proc':>8} "
        + " ".join(f"{p:>12} {'over':>6} {'vs-in':>6} {'ratio':>6}" for p in PATHS)
    )
    for m in lat:
        cells = " ".join(
            f"{p50[m][p]:12.2f} {timed[m][p]:6.2f} {over[m][p]:6.2f} "
            f"{p50[m][p] / p50[m]['inproc']:5.2f}x"
            for p in PATHS
        )
        print(f"{m:8} {p50[m]['inproc']:8.2f} {cells}")
    print(
        "\nMLServer's own floor (a model that does nothing, the JSON path's body), p50 ms: "
        + ", ".join(f"{m} {floor[m]:.2f}" for m in lat)
        + "\nabove the floor, p50 ms: "
        + "; ".join(
            f"{m} " + " ".join(f"{p} {timed[m][p] - floor[m]:.2f}" for p in PATHS) for m in lat
        )
    )
    if rps:
        print(
            f"\ndigits, {args.clients} concurrent clients (load generator on the same "
            f"{os.cpu_count()} cores): " + ", ".join(f"{p} {r:.0f} req/s" for p, r in rps.items())
        )
    if batched:
        print(
            "  with adaptive batching: "
            + ", ".join(f"{p} {r:.0f} req/s" for p, r in batched.items())
        )
    logging_fig = None
    if args.payload_logging:
        from bench.payload_logging import measure, report

        logging_fig = measure(args.n * 20)
        print("\n" + report(logging_fig))
    if args.out_json:
        Path(args.out_json).write_text(
            json.dumps(
                {
                    "bench": "serving",
                    "load_1m": os.getloadavg()[0],
                    "cpus": os.cpu_count(),
                    "args": vars(args),
                    "paths": list(PATHS),
                    # overhead_p50_ms[family][path]: median over requests of the client's
                    # latency less the model's decode + predict inside the server, ms.
                    "overhead_p50_ms": timed,
                    # overhead_vs_inproc_p50_ms[family][path]: median over rounds of
                    # (served - the in-process call of the same round), ms.
                    "overhead_vs_inproc_p50_ms": over,
                    # mlserver_floor_p50_ms[family]: a plain MLServer answering the JSON
                    # path's body from a model that does nothing, interleaved, ms.
                    "mlserver_floor_p50_ms": floor,
                    # overhead_above_floor_p50_ms[family][path]: overhead_p50_ms less the
                    # floor: what driftloop's runtime and path add to MLServer's own cost.
                    "overhead_above_floor_p50_ms": {
                        m: {p: timed[m][p] - floor[m] for p in PATHS} for m in timed
                    },
                    # p50_ms[family][side]: median latency of each side ("inproc" and each path).
                    "p50_ms": p50,
                    "p99_ms": {m: {k: pct(v, 99) for k, v in s.items()} for m, s in lat.items()},
                    "ratio_p50": {m: {p: p50[m][p] / p50[m]["inproc"] for p in PATHS} for m in lat},
                    "n": {m: len(s["inproc"]) for m, s in lat.items()},
                    # digits_rps[path]: requests/s with args.clients concurrent clients.
                    "digits_rps": rps,
                    "digits_clients": args.clients,
                    "digits_server_cpu_ms_per_request": cpu_ms,
                    # digits_rps_batched[path]: the same with MLServer's adaptive batching
                    # (numeric tensors; max_batch_size/max_batch_time in args).
                    "digits_rps_batched": batched,
                    "payload_logging": logging_fig,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
