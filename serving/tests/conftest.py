"""Session fixtures shared by unit and integration tests: offline models and test images."""

from __future__ import annotations

from pathlib import Path

import pytest
from serving_testlib import BUS_JPG, BUS_MISSING, export_onnx, jpeg, make_model, shapes_image

CIRCLES = {0: "circle", 1: "square"}
ANIMALS = {0: "cat", 1: "dog", 2: "bird"}


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local model directory in every layout the store reads.

    circles.pt            -> circles v1 (always answers "circle")
    animals/1/model.pt    -> animals v1 (always "dog")
    animals/2/model.pt    -> animals v2 (always "bird")
    shapes.onnx           -> shapes v1, an ONNX export (always "circle")
    """
    root = tmp_path_factory.mktemp("models")
    make_model(root / "circles.pt", CIRCLES, favour=0, seed=1)
    make_model(root / "animals" / "1" / "model.pt", ANIMALS, favour=1, seed=2)
    make_model(root / "animals" / "2" / "model.pt", ANIMALS, favour=2, seed=3)
    export_onnx(root / "circles.pt", root / "shapes.onnx", imgsz=320)
    return root


@pytest.fixture(scope="session")
def shapes_jpeg() -> bytes:
    return jpeg(shapes_image())


@pytest.fixture(scope="session")
def bus_jpeg() -> bytes:
    if not BUS_JPG.exists():
        pytest.skip(BUS_MISSING)
    return BUS_JPG.read_bytes()
