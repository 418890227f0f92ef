"""V2 request/response shapes: round trips and the rules bad inputs break."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from driftloop.errors import BadRequest, PayloadTooLarge
from driftloop.serving import v2


def test_outputs_round_trip_through_v2_tensors():
    output = {"text": "hello", "confidence": 0.5, "boxes": [[1, 2, 3, 4], [5, 6, 7, 8]],
              "labels": ["face", "face"], "scores": [0.9, 0.8], "label": 3, "empty": []}
    tensors = v2.encode_outputs(output)
    by_name = {t["name"]: t for t in tensors}
    assert by_name["boxes"]["shape"] == [2, 4] and by_name["boxes"]["datatype"] == "INT64"
    assert by_name["text"]["datatype"] == "BYTES" and by_name["text"]["parameters"]["scalar"]
    assert by_name["scores"]["datatype"] == "FP64"
    assert v2.decode_outputs(tensors) == output


def test_media_request_decodes_to_the_same_bytes():
    body = v2.media_request(b"RIFFxxxxWAVE", request_id="r1")
    assert body["id"] == "r1"
    media, tensor = v2.decode_input(body["inputs"], max_bytes=100)
    assert media == b"RIFFxxxxWAVE" and tensor is None


def test_tensor_request_decodes_to_an_array_of_its_shape():
    body = v2.tensor_request([[1, 2, 3], [4, 5, 6]], datatype="FP32")
    media, tensor = v2.decode_input(body["inputs"], max_bytes=1000)
    assert media is None and tensor.shape == (2, 3) and tensor.dtype == np.float32


@pytest.mark.parametrize(("inputs", "error", "needle"), [
    ([], BadRequest, "exactly one"),
    ([{"datatype": "BYTES", "shape": [1], "data": [""], "parameters":
       {"content_type": "base64"}}], BadRequest, "empty"),
    ([{"datatype": "BYTES", "shape": [1], "data": ["!!"], "parameters":
       {"content_type": "base64"}}], BadRequest, "base64"),
    ([{"datatype": "BYTES", "shape": [2], "data": ["a", "b"]}], BadRequest, "one file"),
    ([{"datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3]}], BadRequest, "shape"),
    ([{"datatype": "COMPLEX", "shape": [1], "data": [1]}], BadRequest, "datatype"),
    ([{"datatype": "FP64", "shape": [1000], "data": [0] * 1000}], PayloadTooLarge, "limit"),
    ([{"datatype": "BYTES", "shape": [1], "parameters": {"content_type": "base64"},
       "data": [base64.b64encode(b"x" * 200).decode()]}], PayloadTooLarge, "limit"),
])
def test_bad_inputs_raise_with_a_message(inputs, error, needle):
    with pytest.raises(error) as e:
        v2.decode_input(inputs, max_bytes=100)
    assert needle in e.value.message


def test_request_id_prefers_the_header_then_the_body():
    assert v2.request_id({"x-request-id": "h"}, "b") == "h"
    assert v2.request_id({"ce-id": "c"}, "b") == "c"
    assert v2.request_id({}, "b") == "b"
    assert len(v2.request_id(None, None)) == 36


def test_parse_response_takes_the_version_header():
    body = {"id": "i", "model_name": "digits", "model_version": "1",
            "outputs": v2.encode_outputs({"label": 4})}
    pred = v2.parse_response(body, {v2.VERSION_HEADER: "2"})
    assert pred.to_dict() == {"id": "i", "model": "digits", "version": "2",
                              "output": {"label": 4}}


@pytest.mark.parametrize(("datatype", "data", "needle"), [
    ("UINT8", [-1], "outside UINT8's range 0..255"),
    ("INT8", [300], "outside INT8's range -128..127"),
    ("UINT8", [1.5], "whole numbers"),
    ("FP16", [1e6], "outside FP16's range"),
    ("FP32", [float("inf")], "finite"),
    ("INT64", [10 ** 400], "too large"),
    ("BOOL", [2], "true/false"),
])
def test_tensors_outside_their_datatype_range_are_400(datatype, data, needle):
    with pytest.raises(BadRequest) as e:
        v2.decode_input([{"datatype": datatype, "shape": [1], "data": data}], max_bytes=100)
    assert needle in e.value.message


@pytest.mark.parametrize("bad_id", ["a\r\nset-cookie: x", "nul\x00", "caf\u00e9", "x" * 100_000,
                                   "has space", "\udcff"])
def test_request_ids_that_cannot_be_echoed_are_400(bad_id):
    with pytest.raises(BadRequest) as e:
        v2.request_id({}, bad_id)
    assert e.value.fields[0].field == "id" and "printable ASCII" in e.value.message
    with pytest.raises(BadRequest) as e:
        v2.request_id({"x-request-id": bad_id}, "fine")
    assert e.value.fields[0].field == "x-request-id"
    assert len(e.value.message) < 300


def test_client_errors_keep_the_status_and_a_model_timeout_is_not_retryable():
    import httpx

    from driftloop.errors import InferenceTimeout, PayloadTooLarge, Unavailable
    from driftloop.serving.client import _error

    e = _error(httpx.Response(413, json={"error": "faces: input: over the limit"}), "faces")
    assert isinstance(e, PayloadTooLarge) and e.status == 413
    e = _error(httpx.Response(504, json={"error": "ocr: OCR took longer than the limit of 10 s"}),
               "ocr inference")
    assert isinstance(e, InferenceTimeout) and not isinstance(e, Unavailable)
    assert e.status == 504 and "limit of 10 s" in e.message
    assert isinstance(_error(httpx.Response(504, text="<html>gateway</html>"), "x"), Unavailable)
    assert isinstance(_error(httpx.Response(503, json={"error": "x"}), "x"), Unavailable)
