"""The objects detector in process: milliseconds per image, against the faces Haar
cascade on the same photos in the same run (the detector driftloop had before).

Both models are loaded as MLServer loads them (from their version-1 artifacts) and run
on scikit-image's chelsea, coffee and astronaut photos, decoded once; the timed part is
``detect`` (resize + inference + decoding for objects; equalization + cascade for faces),
one thread each. Prints the median wall and CPU milliseconds per image, the ratio
objects / faces, and the top detection of each photo.

The serving environment has no scikit-image: the photos are read with the main
environment's Python (``.venv``) and handed over as a NumPy file.

    .venv-serving/bin/python bench/objects.py [--rounds 30] [--out-json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from driftloop.serving.models.faces import FacesModel  # noqa: E402
from driftloop.serving.models.objects import ObjectsModel  # noqa: E402

PHOTOS = ("chelsea", "coffee", "astronaut")
MAIN_PYTHON = ROOT / ".venv" / "bin" / "python"


def photos() -> dict[str, np.ndarray]:
    """scikit-image's photos, read by the main environment (it has scikit-image)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "photos.npz"
        script = (
            "import sys, numpy as np; from skimage import data; "
            f"np.savez(sys.argv[1], **{{n: getattr(data, n)() for n in {PHOTOS!r}}})"
        )
        subprocess.run([str(MAIN_PYTHON), "-c", script, str(path)], check=True, timeout=120)
        with np.load(path) as d:
            return {n: d[n] for n in PHOTOS}


def timed(fn: Any, arg: Any, rounds: int) -> tuple[float, float]:
    """Median wall and CPU (the whole process: OpenCV runs threads of its own) ms of ``fn(arg)``."""
    fn(arg)  # warm-up
    wall, cpu = [], []
    for _ in range(rounds):
        t, c = time.perf_counter(), time.process_time()
        fn(arg)
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - t)
    return statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--out-json", type=Path)
    args = ap.parse_args()

    images = photos()
    objects = ObjectsModel.from_artifact(ObjectsModel.initial_version().artifact)
    faces = FacesModel.from_artifact(FacesModel.initial_version().artifact)
    rows: dict[str, dict[str, Any]] = {}
    for name, rgb in images.items():
        gray = np.asarray(rgb.mean(axis=2), dtype=np.uint8)
        o_wall, o_cpu = timed(objects.detect, rgb, args.rounds)
        f_wall, f_cpu = timed(faces.detect, gray, args.rounds)
        out = objects.detect(rgb)
        top = (out["labels"][0], out["scores"][0]) if out["labels"] else ("none", 0.0)
        rows[name] = {
            "pixels": f"{rgb.shape[1]}x{rgb.shape[0]}",
            "objects_wall_ms": o_wall,
            "objects_cpu_ms": o_cpu,
            "faces_wall_ms": f_wall,
            "faces_cpu_ms": f_cpu,
            "top": {"label": top[0], "score": top[1]},
        }
        print(
            f"{name:10s} {rows[name]['pixels']:>8s}  objects {o_wall:6.1f} ms wall "
            f"{o_cpu:6.1f} ms CPU | faces {f_wall:6.1f} wall {f_cpu:6.1f} CPU | "
            f"objects/faces CPU {o_cpu / f_cpu:5.2f}x | top {top[0]} {top[1]:.2f}"
        )
    o = statistics.median(r["objects_cpu_ms"] for r in rows.values())
    f = statistics.median(r["faces_cpu_ms"] for r in rows.values())
    summary = {
        "objects_cpu_ms_median": o,
        "objects_wall_ms_median": statistics.median(r["objects_wall_ms"] for r in rows.values()),
        "faces_cpu_ms_median": f,
        "objects_vs_faces_cpu": o / f,
        "rounds": args.rounds,
        "photos": rows,
    }
    print(f"median over photos: objects {o:.1f} ms CPU/image, faces {f:.1f}; ratio {o / f:.2f}x")
    if args.out_json:
        args.out_json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
