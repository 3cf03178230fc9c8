"""OIP v2 request parsing and response encoding, without a server."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest
from ailab_serving.detection import PredictParams
from ailab_serving.http_common import ApiError
from ailab_serving.inference import ImageResult
from ailab_serving.oip import deserialize_bytes, encode_response, output_tensors, parse_infer_request

DEFAULTS = PredictParams(0.25, 0.7, 640, 300)


def serialize(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def binary_request(items: list[bytes], **extra: object) -> tuple[bytes, str]:
    blob = serialize(items)
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "datatype": "BYTES",
                    "shape": [len(items)],
                    "parameters": {"binary_data_size": len(blob)},
                }
            ],
            **extra,
        }
    ).encode()
    return head + blob, str(len(head))


def test_bytes_binary_extension() -> None:
    body, length = binary_request([b"one", b"two!"], parameters={"conf": 0.5})
    parsed = parse_infer_request(body, length, 16)
    assert parsed.images == [b"one", b"two!"]
    assert parsed.params == {"conf": 0.5}


def test_bytes_as_base64_json() -> None:
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "datatype": "BYTES",
                    "shape": [1],
                    "data": [base64.b64encode(b"img").decode()],
                }
            ]
        }
    ).encode()
    assert parse_infer_request(body, None, 16).images == [b"img"]


def test_uint8_tensor_rgb_to_bgr() -> None:
    pixels = np.zeros((2, 3, 3), np.uint8)
    pixels[..., 0] = 255  # red in RGB
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "datatype": "UINT8",
                    "shape": [2, 3, 3],
                    "parameters": {"binary_data_size": pixels.size},
                }
            ]
        }
    ).encode()
    parsed = parse_infer_request(head + pixels.tobytes(), str(len(head)), 16)
    (image,) = parsed.images
    assert isinstance(image, np.ndarray) and image.shape == (2, 3, 3)
    assert image[0, 0].tolist() == [0, 0, 255]  # BGR for OpenCV


def test_uint8_json_data() -> None:
    body = json.dumps(
        {"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1, 1, 1, 3], "data": [[[[1, 2, 3]]]]}]}
    ).encode()
    (image,) = parse_infer_request(body, None, 16).images
    assert image.tolist() == [[[3, 2, 1]]]


def input_doc(**tensor: object) -> bytes:
    return json.dumps({"inputs": [{"name": "images", **tensor}]}).encode()


@pytest.mark.parametrize(
    ("body", "header", "message"),
    [
        (b"not json", None, "not valid JSON"),
        (b"[]", None, "'inputs' list"),
        (b'{"inputs": []}', None, "'inputs' list"),
        (input_doc(datatype="FP32", shape=[1], data=[1.0]), None, "datatype"),
        (input_doc(datatype="BYTES", shape=[2], data=["aW1n"]), None, "2 elements"),
        (input_doc(datatype="BYTES", shape=[1], data=["%%%"]), None, "base64"),
        (input_doc(datatype="BYTES", shape="x", data=[]), None, "shape"),
        (input_doc(datatype="UINT8", shape=[2, 2], data=[1, 2, 3, 4]), None, "[H, W, 3]"),
        (input_doc(datatype="UINT8", shape=[1, 1, 3], data=[1, 2, 300]), None, "0..255"),
        (input_doc(datatype="BYTES", shape=[1]), None, "neither"),
        (
            b'{"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "parameters": '
            b'{"binary_data_size": 99}}]}',
            "1000",
            "out of range",
        ),
        (
            input_doc(datatype="BYTES", shape=[1], parameters={"binary_data_size": 50}),
            None,
            "binary_data_size",
        ),
        (b"{}", "abc", "not an integer"),
    ],
)
def test_bad_requests_are_400(body: bytes, header: str | None, message: str) -> None:
    with pytest.raises(ApiError) as err:
        parse_infer_request(body, header, 16)
    assert err.value.status == 400
    assert message in err.value.message


def test_too_many_images_is_413() -> None:
    body, length = binary_request([b"x"] * 5)
    with pytest.raises(ApiError) as err:
        parse_infer_request(body, length, 4)
    assert err.value.status == 413


def test_truncated_bytes_element() -> None:
    with pytest.raises(ApiError, match="longer than the data"):
        deserialize_bytes(struct.pack("<I", 10) + b"abc")


def result(n: int) -> ImageResult:
    dets = [
        {"class_id": i, "class_name": str(i), "score": 0.5, "box": [i, i, i + 1, i + 1]} for i in range(n)
    ]
    return ImageResult(width=10, height=10, detections=dets, timings_ms={})


def test_outputs_are_padded_to_the_most_detections() -> None:
    tensors = output_tensors([result(2), result(0)])
    assert tensors["num_detections"].tolist() == [2, 0]
    assert tensors["boxes"].shape == (2, 2, 4)
    assert tensors["classes"].tolist() == [[0, 1], [-1, -1]]


def test_binary_response_layout() -> None:
    body, length = binary_request(
        [b"x"], outputs=[{"name": "scores", "parameters": {"binary_data": True}}, {"name": "num_detections"}]
    )
    parsed = parse_infer_request(body, length, 4)
    response = encode_response("m", "1", parsed, output_tensors([result(3)]))
    header_len = int(response.headers["inference-header-content-length"])
    header = json.loads(response.body[:header_len])
    assert [o["name"] for o in header["outputs"]] == ["scores", "num_detections"]
    assert header["outputs"][1]["data"] == [3]
    scores = np.frombuffer(response.body[header_len:], np.float32)
    assert scores.tolist() == [0.5, 0.5, 0.5]
