"""Every CPU backend gives the same detections through the whole server (IoU >= 0.95, scores +- 0.01).

A randomly initialised YOLOv8n finds nothing at the default confidence, so the comparison runs at
a confidence just above its noise floor, where each image gives 150-250 boxes:
enough real boxes that a wrong letterbox, a lost precision or a different NMS shows.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from serving_testlib import BUS_JPG, BUS_MISSING, SHARED, make_plain_model, run_server

BACKENDS = {"torch": "pt", "onnxruntime": "onnx", "openvino": "openvino"}
IMAGES = [BUS_JPG, SHARED / "data" / "images" / "zidane.jpg"]
LOW_CONF = "0.00002"


def iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def unmatched(reference: list[dict[str, Any]], other: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Detections of ``reference`` with no twin in ``other`` (same class, IoU >= 0.95, score +- 0.01)."""
    return [
        d
        for d in reference
        if not any(
            o["class_id"] == d["class_id"]
            and abs(o["score"] - d["score"]) <= 0.01
            and iou(o["box"], d["box"]) >= 0.95
            for o in other
        )
    ]


@pytest.fixture(scope="module")
def detections(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[list[dict[str, Any]]]]:
    if not all(path.exists() for path in IMAGES):
        pytest.skip(BUS_MISSING)
    work = tmp_path_factory.mktemp("backends")
    make_plain_model(work / "models" / "yolo.pt", seed=1)
    found: dict[str, list[list[dict[str, Any]]]] = {}
    for backend, engine in BACKENDS.items():
        env = {
            "AILAB_SERVE_MODEL_DIR": str(work / "models"),
            "AILAB_SERVE_CACHE_DIR": str(work / "cache"),
            "AILAB_SERVE_BACKEND": backend,
            "AILAB_SERVE_DEVICE": "cpu",
        }
        with run_server(env, work / f"{backend}.log", timeout=180) as url:
            per_image = []
            for path in IMAGES:
                response = httpx.post(
                    f"{url}/v1/predict/yolo",
                    files={"file": (path.name, path.read_bytes(), "image/jpeg")},
                    data={"conf": LOW_CONF, "max_det": "1000"},
                    timeout=120,
                )
                assert response.status_code == 200, response.text
                assert response.json()["engine"] == engine
                per_image.append(response.json()["images"][0]["detections"])
        found[backend] = per_image
    return found


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_backend_matches_torch(detections: dict[str, list[list[dict[str, Any]]]], backend: str) -> None:
    for reference, other in zip(detections["torch"], detections[backend], strict=True):
        assert len(reference) > 100, "too few boxes to compare: the confidence is too high"
        assert len(other) == len(reference)
        assert not unmatched(reference, other)
        assert not unmatched(other, reference)
