"""The Kubeflow Pipelines training pipeline: one lightweight component that runs the same
job entry point as every backend (``python -m driftloop.retrain.job``) and returns the
registered version. Parameters match what the kubeflow backend sends: ``model``,
``run_id``, ``params`` (a JSON object as text).

Needs only the kfp SDK (``.venv-kfp``), so it imports nothing of driftloop at module level:
``python -m driftloop.retrain.kfp_pipeline OUT.yaml [--image IMAGE]`` compiles it. In the
cluster the component runs in the training image, whose interpreter has driftloop; when
run locally (kfp's SubprocessRunner) ``DRIFTLOOP_JOB_PYTHON`` names that interpreter.
No ``from __future__ import annotations`` here: kfp reads the annotations as types.
"""


import argparse
import sys
from collections.abc import Callable
from typing import Any

from kfp import compiler, dsl

PIPELINE_NAME = "driftloop-train"
DEFAULT_IMAGE = "ghcr.io/driftloop/driftloop:latest"


def train(model: str, run_id: str, params: str) -> str:
    """Run the training job; the registered version is the component's output."""
    import json
    import os
    import subprocess
    import sys

    python = os.environ.get("DRIFTLOOP_JOB_PYTHON") or sys.executable
    done = subprocess.run([python, "-m", "driftloop.retrain.job", "--model", model,
                           "--run-id", run_id, "--params", params],
                          capture_output=True, text=True, check=False)
    sys.stderr.write(done.stderr[-4000:])
    if done.returncode != 0:
        raise RuntimeError(f"training job exited with {done.returncode}")
    return str(json.loads(done.stdout.strip().splitlines()[-1])["version"])


def build(image: str = DEFAULT_IMAGE) -> Callable[..., Any]:
    """The pipeline with its component bound to ``image``."""
    component = dsl.component(base_image=image)(train)

    def pipeline(model: str, run_id: str, params: str = "{}") -> str:
        task = component(model=model, run_id=run_id, params=params)
        task.set_caching_options(False)
        output: str = task.output  # a placeholder kfp resolves to the component's string
        return output

    # kfp has no type hints: the decorator is applied as a call so its result can be typed.
    compiled: Callable[..., Any] = dsl.pipeline(
        name=PIPELINE_NAME, description="Train one driftloop model version."
    )(pipeline)
    return compiled


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="driftloop.retrain.kfp_pipeline")
    p.add_argument("out", help="Compiled pipeline spec (.yaml)")
    p.add_argument("--image", default=DEFAULT_IMAGE, help="Training image")
    a = p.parse_args(argv)
    compiler.Compiler().compile(build(a.image), a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
