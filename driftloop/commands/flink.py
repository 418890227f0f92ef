"""``driftloop flink ...``: run the Flink jobs outside the local stack (batch preprocess, app)."""

from __future__ import annotations

import os
import subprocess
from typing import Annotated

import typer

from driftloop.settings import PROJECT_ROOT, get_settings

flink_app = typer.Typer(help="Flink jobs: batch preprocessing over the blob store, the app.")


def _run(module: str, args: list[str]) -> int:
    from driftloop.local.components.flink import python, settings_env

    settings = get_settings()
    py = python(settings)
    if not py.exists():
        typer.echo(f"error: {py} missing: run make setup", err=True)
        return 2
    env = {**settings_env(settings), "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.call([str(py), "-m", module, *args], env={**os.environ, **env},
                           cwd=PROJECT_ROOT)


@flink_app.command("preprocess-batch")
def preprocess_batch(
    input_prefix: Annotated[str, typer.Option("--input", help="Blob prefix of media objects.")],
    output_prefix: Annotated[str, typer.Option("--output", help="Blob prefix for results.")],
    model: Annotated[str | None, typer.Option(help="Model for keys without model=<m>.")] = None,
) -> None:
    """Preprocess every .wav/.png/.jpg under a blob prefix with the stream job's transforms."""
    args = ["--input", input_prefix, "--output", output_prefix]
    if model:
        args += ["--model", model]
    raise typer.Exit(_run("flink.jobs.batch", args))


@flink_app.command("run")
def run(
    pipelines: Annotated[str | None, typer.Option(help="preprocess,join,archive")] = None,
) -> None:
    """Run the streaming application in the foreground (Ctrl-C stops it)."""
    raise typer.Exit(_run("flink.jobs.app", ["--pipelines", pipelines] if pipelines else []))


def _sample_inputs(n_audio: int, n_images: int) -> list[tuple[str, bytes, str, str]]:
    """(modality, bytes, content type, model): tones at several rates, gradient images."""
    import io

    import numpy as np
    from PIL import Image
    from scipy.io import wavfile

    out = []
    for i in range(n_audio):
        rate = (8000, 16000, 22050, 44100)[i % 4]
        t = np.arange(rate) / rate
        buf = io.BytesIO()
        wavfile.write(buf, rate, (0.1 * (i + 1) * np.sin(2 * np.pi * 330 * t) * 32767)
                      .astype(np.int16))
        out.append(("audio", buf.getvalue(), "audio/wav", "speech"))
    for i in range(n_images):
        arr = np.tile(np.linspace(0, 255, 160 + 20 * i).astype(np.uint8), (120, 1))
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG" if i % 2 == 0 else "JPEG")
        out.append(("image", buf.getvalue(), "image/png" if i % 2 == 0 else "image/jpeg", "ocr"))
    return out


@flink_app.command("send-samples")
def send_samples(
    audio: Annotated[int, typer.Option(help="Audio clips to send.")] = 5,
    images: Annotated[int, typer.Option(help="Images to send.")] = 5,
    wait_s: Annotated[float, typer.Option(help="How long to wait for the results.")] = 60.0,
) -> None:
    """Send synthetic raw inputs and show their preprocessed records as they come out."""
    import time
    import uuid

    from kafka import KafkaConsumer

    from driftloop import bus, events, topics

    settings = get_settings()
    producer = bus.make_producer(settings)
    ids: set[str] = set()
    for modality, data, ct, model in _sample_inputs(audio, images):
        ev = events.new_event(events.INPUT, "driftloop/cli", data, id=str(uuid.uuid4()),
                              datacontenttype=ct, model=model)
        bus.publish(producer, topics.raw(modality), [ev])
        ids.add(ev.id)
    producer.close()
    typer.echo(f"sent {audio} audio clips and {images} images to the raw topics")
    consumer = KafkaConsumer(*(topics.preprocessed(m) for m in topics.MODALITIES),
                             **bus.client_config(settings, "cli-preprocess"), group_id=None,
                             auto_offset_reset="earliest", isolation_level="read_committed",
                             enable_auto_commit=False)
    deadline = time.monotonic() + wait_s
    try:
        while ids and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=500).values():
                for r in recs:
                    ev = events.from_kafka(r.value, r.headers, r.key)
                    if ev.id in ids:
                        ids.discard(ev.id)
                        f = ev.data["features"]
                        shown = ", ".join(f"{k}={v:.3g}" for k, v in list(f.items())[:4])
                        typer.echo(f"  {r.topic}: {ev.id[:8]} {shown}")
    finally:
        consumer.close()
    if ids:
        typer.echo(f"error: {len(ids)} inputs not preprocessed after {wait_s:g}s", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(flink_app, name="flink")
