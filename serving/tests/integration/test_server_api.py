"""Every endpoint of a real server process on 127.0.0.1 (local + S3 models, ONNX Runtime on CPU)."""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from serving_testlib import jpeg, make_video, shapes_image


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=60) as c:
        yield c


def predict(client: httpx.Client, model: str, image: bytes, **form: Any) -> httpx.Response:
    params = {k: form.pop(k) for k in ("version", "return") if k in form}
    return client.post(
        f"/v1/predict/{model}",
        files={"file": ("img.jpg", image, "image/jpeg")},
        data={k: str(v) for k, v in form.items()},
        params=params,
    )


def classes_of(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    return {d["class_name"] for img in response.json()["images"] for d in img["detections"]}


def test_health(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True


def test_server_and_model_metadata(client: httpx.Client) -> None:
    meta = client.get("/v2").json()
    assert meta["name"] == "ailab-serving" and "binary_tensor_data" in meta["extensions"]
    model = client.get("/v2/models/animals").json()
    assert model["name"] == "animals" and model["versions"] == ["1", "2"]
    assert {o["name"] for o in model["outputs"]} == {"num_detections", "boxes", "scores", "classes"}
    assert client.get("/v2/models/animals/versions/1").json()["versions"] == ["1"]
    assert client.get("/v2/models/animals/ready").json()["ready"] is True
    assert client.get("/v2/models/animals/versions/2/ready").status_code == 200


def test_model_listing(client: httpx.Client) -> None:
    body = client.get("/v1/models").json()
    models = {m["name"]: m for m in body["models"]}
    assert {"circles", "animals", "shapes", "s3yolo"} <= set(models)
    assert models["s3yolo"]["source"] == "s3" and models["circles"]["source"] == "local"
    assert [v["version"] for v in models["animals"]["versions"]] == ["1", "2"]
    assert models["shapes"]["versions"][0]["formats"] == ["onnx"]
    circles = models["circles"]["versions"][0]
    # Preloaded at start-up, so task and classes are known.
    assert (
        circles["loaded"]
        and circles["task"] == "detect"
        and circles["classes"] == {"0": "circle", "1": "square"}
    )
    assert body["runtime"]["device"] == "cpu"


def test_predict_json(client: httpx.Client, shapes_jpeg: bytes) -> None:
    response = predict(client, "circles", shapes_jpeg, conf=0.5, max_det=20)
    body = response.json()
    assert response.status_code == 200
    assert (body["model"], body["version"], body["task"], body["engine"]) == (
        "circles",
        "1",
        "detect",
        "openvino",
    )
    (image,) = body["images"]
    assert (image["width"], image["height"]) == (640, 480)
    assert 0 < len(image["detections"]) <= 20
    for det in image["detections"]:
        assert det["class_id"] == 0 and det["class_name"] == "circle" and det["score"] >= 0.5
        x1, y1, x2, y2 = det["box"]
        assert 0 <= x1 <= x2 <= 640 and 0 <= y1 <= y2 <= 480
        assert all(0 <= v <= 1 for v in det["box_normalized"])
        assert det["box_normalized"][2] == pytest.approx(x2 / 640, abs=1e-3)
    assert {"preprocess", "queue", "inference", "postprocess"} <= set(image["timings_ms"])
    assert body["timings_ms"]["total"] > 0


def test_model_switching_by_name_version_and_source(client: httpx.Client, shapes_jpeg: bytes) -> None:
    assert classes_of(predict(client, "animals", shapes_jpeg, version="1")) == {"dog"}
    assert classes_of(predict(client, "animals", shapes_jpeg, version="2")) == {"bird"}
    assert classes_of(predict(client, "animals", shapes_jpeg)) == {"bird"}  # latest
    assert classes_of(predict(client, "animals:1", shapes_jpeg)) == {"dog"}
    assert classes_of(predict(client, "s3yolo", shapes_jpeg, version="1")) == {"dog"}
    assert classes_of(predict(client, "s3yolo", shapes_jpeg)) == {"circle"}
    assert classes_of(predict(client, "shapes", shapes_jpeg)) == {"circle"}
    assert classes_of(predict(client, "circles", shapes_jpeg)) == {"circle"}


def test_filters(client: httpx.Client, shapes_jpeg: bytes) -> None:
    assert classes_of(predict(client, "circles", shapes_jpeg, conf=0.99)) == set()
    assert classes_of(predict(client, "circles", shapes_jpeg, classes="1")) == set()
    assert classes_of(predict(client, "circles", shapes_jpeg, classes="0,1")) == {"circle"}
    body = predict(client, "circles", shapes_jpeg, max_det=3, imgsz=160).json()
    assert len(body["images"][0]["detections"]) == 3 and body["params"]["imgsz"] == 160


def test_several_images_in_one_request(client: httpx.Client) -> None:
    files = [
        ("file", (f"{i}.jpg", jpeg(shapes_image(320 + 64 * i, 240, seed=i)), "image/jpeg")) for i in range(3)
    ]
    response = client.post("/v1/predict/circles", files=files)
    assert response.status_code == 200, response.text
    images = response.json()["images"]
    assert [(i["index"], i["width"]) for i in images] == [(0, 320), (1, 384), (2, 448)]


def test_bus_image(client: httpx.Client, bus_jpeg: bytes) -> None:
    image = predict(client, "circles", bus_jpeg).json()["images"][0]
    assert (image["width"], image["height"]) == (810, 1080)


def test_annotated_image(client: httpx.Client, shapes_jpeg: bytes) -> None:
    response = predict(client, "circles", shapes_jpeg, max_det=5, **{"return": "image"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert response.headers["x-detections"] == "5"
    img = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (480, 640, 3)
    original = cv2.imdecode(np.frombuffer(shapes_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(img.astype(int) - original.astype(int)).mean() > 0.5  # boxes were drawn


def test_annotated_image_to_s3(client: httpx.Client, shapes_jpeg: bytes, moto_s3: dict[str, Any]) -> None:
    response = predict(client, "circles", shapes_jpeg, max_det=5, **{"return": "s3"})
    assert response.status_code == 200, response.text
    stored = response.json()["images"][0]["annotated"]
    assert stored["bucket"] == moto_s3["bucket"] and stored["key"].startswith("predictions/circles/")
    obj = moto_s3["client"].get_object(Bucket=stored["bucket"], Key=stored["key"])
    assert obj["ContentType"] == "image/jpeg"
    fetched = httpx.get(stored["url"], timeout=30)  # the presigned URL works without credentials
    assert fetched.status_code == 200 and fetched.content[:2] == b"\xff\xd8"


def read_ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines()]


def test_video_upload_streams_frames(client: httpx.Client, tmp_path: Path) -> None:
    video = make_video(tmp_path / "clip.avi", frames=12)
    with video.open("rb") as fh:
        response = client.post(
            "/v1/predict/circles/video",
            files={"file": ("clip.avi", fh, "video/x-msvideo")},
            data={"frame_stride": "3", "max_det": "4"},
        )
    lines = read_ndjson(response)
    assert lines[0]["type"] == "meta" and (lines[0]["width"], lines[0]["height"]) == (320, 240)
    frames = [line for line in lines if line["type"] == "frame"]
    assert [f["frame"] for f in frames] == [0, 3, 6, 9]
    assert all(len(f["detections"]) == 4 for f in frames)
    assert lines[-1]["type"] == "summary" and lines[-1]["frames_read"] == 12


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[str]:
    make_video(tmp_path / "clip.avi", frames=5)
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        thread.join(5)


def test_video_from_allowed_url(client: httpx.Client, file_server: str) -> None:
    response = client.post("/v1/predict/circles/video", data={"url": f"http://{file_server}/clip.avi"})
    lines = read_ndjson(response)
    assert len([line for line in lines if line["type"] == "frame"]) == 5
    refused = client.post(
        "/v1/predict/circles/video", data={"url": f"http://localhost:{file_server.split(':')[1]}/x"}
    )
    assert refused.status_code == 403 and "allowlist" in refused.json()["error"].lower().replace("_", "")


def test_metrics(client: httpx.Client, shapes_jpeg: bytes) -> None:
    predict(client, "circles", shapes_jpeg)
    text = client.get("/metrics").text
    for name in (
        "ailab_requests_total",
        "ailab_request_duration_seconds_bucket",
        "ailab_inference_duration_seconds_bucket",
        "ailab_batch_size_bucket",
        "ailab_queue_depth",
        "ailab_model_loads_total",
        "ailab_model_cache_hits_total",
        "ailab_images_total",
    ):
        assert name in text, name
    assert re.search(r'ailab_model_loads_total\{model="circles"\} [1-9]', text)


def test_web_page_is_served(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "ailab YOLO server" in page.text
    assert client.get("/static/app.js").status_code == 200


def test_no_cors_by_default(client: httpx.Client) -> None:
    response = client.get("/v1/models", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in response.headers


def test_repository_extension(client: httpx.Client) -> None:
    index = client.post("/v2/repository/index").json()
    assert {"name": "animals", "version": "2"} in [
        {"name": e["name"], "version": e["version"]} for e in index
    ]
    assert client.post("/v2/repository/models/shapes/load").json()["loaded"] is True
    assert client.post("/v2/repository/models/shapes/unload").json()["unloaded"] is True


# Bad input never gets a 500 and always says what is wrong as {"error": ...}. --------------------

GOOD = jpeg(shapes_image(64, 48))
BAD_REQUESTS = [
    (
        "corrupt image",
        "/v1/predict/circles",
        {"files": {"file": ("x.jpg", b"\xff\xd8garbage", "image/jpeg")}},
        415,
    ),
    ("empty image", "/v1/predict/circles", {"files": {"file": ("x.jpg", b"", "image/jpeg")}}, 400),
    ("text file", "/v1/predict/circles", {"files": {"file": ("x.txt", b"hello", "text/plain")}}, 415),
    ("no file", "/v1/predict/circles", {"data": {"conf": "0.5"}}, 422),
    ("json body", "/v1/predict/circles", {"json": {"file": "x"}}, 422),
    ("unknown model", "/v1/predict/nope", {"files": {"file": ("x.jpg", GOOD, "image/jpeg")}}, 404),
    (
        "unknown version",
        "/v1/predict/animals?version=9",
        {"files": {"file": ("x.jpg", GOOD, "image/jpeg")}},
        404,
    ),
    ("unknown alias", "/v1/predict/animals@prod", {"files": {"file": ("x.jpg", GOOD, "image/jpeg")}}, 404),
    ("conf > 1", "/v1/predict/circles", {"files": {"file": ("x.jpg", GOOD)}, "data": {"conf": "2"}}, 422),
    (
        "conf not a number",
        "/v1/predict/circles",
        {"files": {"file": ("x.jpg", GOOD)}, "data": {"conf": "x"}},
        422,
    ),
    (
        "imgsz too small",
        "/v1/predict/circles",
        {"files": {"file": ("x.jpg", GOOD)}, "data": {"imgsz": "8"}},
        422,
    ),
    (
        "classes not ints",
        "/v1/predict/circles",
        {"files": {"file": ("x.jpg", GOOD)}, "data": {"classes": "a"}},
        422,
    ),
    (
        "class out of range",
        "/v1/predict/circles",
        {"files": {"file": ("x.jpg", GOOD)}, "data": {"classes": "7"}},
        422,
    ),
    ("bad return", "/v1/predict/circles?return=pdf", {"files": {"file": ("x.jpg", GOOD)}}, 422),
    (
        "image return, two images",
        "/v1/predict/circles?return=image",
        {"files": [("file", ("a.jpg", GOOD)), ("file", ("b.jpg", GOOD))]},
        422,
    ),
    ("video: nothing", "/v1/predict/circles/video", {"data": {"frame_stride": "2"}}, 422),
    ("video: garbage", "/v1/predict/circles/video", {"files": {"file": ("v.mp4", b"\0" * 2048)}}, 415),
    (
        "video: bad stride",
        "/v1/predict/circles/video",
        {"files": {"file": ("v.mp4", b"x")}, "data": {"frame_stride": "0"}},
        422,
    ),
    ("video: file: url", "/v1/predict/circles/video", {"data": {"url": "file:///etc/passwd"}}, 403),
    ("oip: not json", "/v2/models/circles/infer", {"content": b"{nope"}, 400),
    ("oip: no inputs", "/v2/models/circles/infer", {"json": {"inputs": []}}, 400),
    (
        "oip: unknown model",
        "/v2/models/nope/infer",
        {"json": {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["aGk="]}]}},
        404,
    ),
    (
        "oip: bytes not an image",
        "/v2/models/circles/infer",
        {"json": {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["aGk="]}]}},
        415,
    ),
    (
        "oip: bad param",
        "/v2/models/circles/infer",
        {
            "json": {
                "inputs": [{"name": "i", "datatype": "UINT8", "shape": [1, 1, 3], "data": [1, 2, 3]}],
                "parameters": {"conf": "high"},
            }
        },
        422,
    ),
    ("oip: unknown model metadata", "/v2/models/nope", {"method": "GET"}, 404),
    ("unknown route", "/v3/whatever", {"method": "GET"}, 404),
]


@pytest.mark.parametrize(("case", "path", "kwargs", "status"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests(
    client: httpx.Client, case: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    kwargs = dict(kwargs)
    method = kwargs.pop("method", "POST")
    response = client.request(method, path, **kwargs)
    assert response.status_code == status, (case, response.text)
    assert isinstance(response.json()["error"], str) and response.json()["error"]
    assert client.get("/v2/health/live").status_code == 200
