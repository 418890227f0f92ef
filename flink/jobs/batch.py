"""Preprocess, batch mode: every media object under a blob-store prefix → JSON under another.

``python -m flink.jobs.batch --input raw/ --output preprocessed/ [--model NAME]``
(inside .venv-flink). Same transforms and the same output records as the stream job: the
object ``<input>/<rel>`` becomes ``<output>/<rel>.json`` holding the preprocessed
CloudEvent (structured mode, ``id`` = ``<rel>``); a rejected object becomes
``<output>/_rejected/<rel>.json`` with the reason. The model is the ``model=<m>`` path
segment of the key when there is one, else ``--model``. Only keys travel through Flink;
workers read and write the objects themselves, so big media never sit in the JVM heap.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from driftloop import events
from driftloop.blob import open_store
from driftloop.settings import Settings
from flink.transforms import Rejected
from flink.transforms.records import PreprocessConfig, preprocess_event

EXTENSIONS = {
    ".wav": ("audio", "audio/wav"),
    ".png": ("image", "image/png"),
    ".jpg": ("image", "image/jpeg"),
    ".jpeg": ("image", "image/jpeg"),
}
BATCH_SOURCE = "driftloop/flink/batch"


def classify(key: str) -> tuple[str, str] | None:
    """(modality, content type) from the object's extension; None for other objects."""
    dot = key.rfind(".")
    return EXTENSIONS.get(key[dot:].lower()) if dot >= 0 else None


def model_of(rel: str, default: str | None) -> str | None:
    for part in rel.split("/"):
        if part.startswith("model="):
            return part[len("model="):]
    return default


def process_object(
    data: bytes, rel: str, default_model: str | None, cfg: PreprocessConfig,
    offload: Any = None,
) -> tuple[str, dict[str, Any]]:
    """One object → ("ok", structured preprocessed event) or ("rejected", reason record)."""
    kind = classify(rel)
    if kind is None:
        return "skipped", {}
    modality, content_type = kind
    model = model_of(rel, default_model)
    ext = {"model": model} if model else {}
    event = events.Event(id=rel, source=BATCH_SOURCE, type=events.INPUT, data=data,
                         datacontenttype=content_type, extensions=ext)
    try:
        out = preprocess_event(event, modality, cfg, offload)
    except Rejected as r:
        return "rejected", {"id": rel, "reason": r.reason, "detail": r.detail}
    return "ok", events.to_structured(out)


def run_one(settings_json: dict[str, Any], in_prefix: str, out_prefix: str,
            default_model: str | None, rel: str) -> str:
    """Read, transform and write one object (runs on a Flink worker)."""
    from flink.jobs.preprocess import blob_writes, preprocess_config

    settings = Settings.model_validate(settings_json)
    store = open_store(settings.resolved_blob_url, settings)
    offload = blob_writes(settings)
    status, record = process_object(store.get(in_prefix + rel), rel, default_model,
                                    preprocess_config(settings), offload)
    if status == "ok":
        store.put(f"{out_prefix}{rel}.json", json.dumps(record, sort_keys=True).encode())
    elif status == "rejected":
        store.put(f"{out_prefix}_rejected/{rel}.json", json.dumps(record).encode())
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", required=True, help="blob-store prefix of the media objects")
    parser.add_argument("--output", required=True, help="blob-store prefix for the results")
    parser.add_argument("--model", default=None, help="model for keys without model=<m>")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = Settings()
    in_prefix = args.input if args.input.endswith("/") else args.input + "/"
    out_prefix = args.output if args.output.endswith("/") else args.output + "/"
    store = open_store(settings.resolved_blob_url, settings)
    rels = [k[len(in_prefix):] for k in store.list(in_prefix) if classify(k)]
    if not rels:
        print(json.dumps({"ok": 0, "rejected": 0, "objects": 0}))
        return 0

    from pyflink.common import Types

    from flink.jobs.common import create_env

    t0 = time.monotonic()
    env, _ = create_env(settings, "batch", streaming=False)
    settings_json = settings.reveal(mode="json")
    model = args.model
    statuses = (
        env.from_collection(rels, type_info=Types.STRING())
        .map(lambda rel: run_one(settings_json, in_prefix, out_prefix, model, rel),
             output_type=Types.STRING())
        .name("preprocess-objects")
        .execute_and_collect("driftloop-preprocess-batch")
    )
    counts: dict[str, int] = {}
    with statuses:
        for s in statuses:
            counts[s] = counts.get(s, 0) + 1
    summary = {"objects": len(rels), "ok": counts.get("ok", 0),
               "rejected": counts.get("rejected", 0),
               "seconds": round(time.monotonic() - t0, 2)}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
