"""The OIP v2 contract, driven by Triton's own HTTP client (what KServe/Triton users run)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import cv2
import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from serving_testlib import jpeg, shapes_image
from tritonclient.utils import InferenceServerException


@pytest.fixture(scope="module")
def triton_client(server: str) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(url=server.removeprefix("http://"), network_timeout=60)
    yield client
    client.close()


def test_health_and_metadata(triton_client: triton.InferenceServerClient) -> None:
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()
    assert triton_client.get_server_metadata()["name"] == "ailab-serving"
    assert triton_client.is_model_ready("animals")
    assert triton_client.is_model_ready("animals", model_version="1")
    assert not triton_client.is_model_ready("nope")
    meta = triton_client.get_model_metadata("animals", model_version="2")
    assert meta["versions"] == ["2"] and meta["inputs"][0]["datatype"] == "BYTES"


def infer_bytes(
    client: triton.InferenceServerClient, images: list[bytes], **kwargs: object
) -> triton.InferResult:
    tensor = triton.InferInput("images", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
    outputs = [
        triton.InferRequestedOutput(n, binary_data=True)
        for n in ("num_detections", "boxes", "scores", "classes")
    ]
    return client.infer("circles", [tensor], outputs=outputs, **kwargs)


def test_infer_encoded_images(triton_client: triton.InferenceServerClient) -> None:
    images = [jpeg(shapes_image(640, 480, seed=1)), jpeg(shapes_image(320, 320, seed=2))]
    result = infer_bytes(triton_client, images, parameters={"conf": 0.5, "max_det": 7})
    counts = result.as_numpy("num_detections")
    assert counts.tolist() == [7, 7]
    boxes, scores, classes = result.as_numpy("boxes"), result.as_numpy("scores"), result.as_numpy("classes")
    assert boxes.shape == (2, 7, 4) and boxes.dtype == np.float32
    assert (scores >= 0.5).all() and (classes == 0).all()
    assert boxes[1, :, 2].max() <= 320  # the second image's own pixel space
    assert result.get_response()["model_version"] == "1"


def test_infer_uint8_pixels_and_json_outputs(triton_client: triton.InferenceServerClient) -> None:
    rgb = cv2.cvtColor(shapes_image(320, 240), cv2.COLOR_BGR2RGB)
    tensor = triton.InferInput("images", list(rgb.shape), "UINT8")
    tensor.set_data_from_numpy(rgb, binary_data=True)
    outputs = [
        triton.InferRequestedOutput("boxes", binary_data=False),
        triton.InferRequestedOutput("classes", binary_data=False),
    ]
    result = triton_client.infer(
        "animals", [tensor], outputs=outputs, model_version="1", parameters={"max_det": 3}
    )
    assert result.as_numpy("boxes").shape == (1, 3, 4)
    assert (result.as_numpy("classes") == 1).all()  # animals v1 answers "dog"


def test_infer_errors_surface_as_exceptions(triton_client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="unknown model"):
        tensor = triton.InferInput("images", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([jpeg(shapes_image())], dtype=np.object_))
        triton_client.infer("nope", [tensor])
    with pytest.raises(InferenceServerException, match="not a decodable image"):
        infer_bytes(triton_client, [b"definitely not an image"])


def test_plain_json_request_with_base64(server: str) -> None:
    body = {
        "id": "req-1",
        "inputs": [
            {
                "name": "images",
                "datatype": "BYTES",
                "shape": [1],
                "data": [base64.b64encode(jpeg(shapes_image())).decode()],
            }
        ],
        "parameters": {"max_det": 2},
    }
    response = httpx.post(f"{server}/v2/models/circles/versions/1/infer", json=body, timeout=60)
    assert response.status_code == 200, response.text
    out = {o["name"]: o for o in response.json()["outputs"]}
    assert response.json()["id"] == "req-1"
    assert out["num_detections"]["data"] == [2] and out["boxes"]["shape"] == [1, 2, 4]
