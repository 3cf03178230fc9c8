"""The two engines agree, and our pre/post-processing matches ultralytics' own predictor."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from ailab_serving.detection import PredictParams, run_nms, to_detections
from ailab_serving.engines import OnnxEngine, TorchEngine, UnsupportedModelError, export_onnx
from ailab_serving.images import letterbox, network_shape
from serving_testlib import make_plain_model, shapes_image
from ultralytics import YOLO


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_plain_model(tmp_path_factory.mktemp("plain") / "plain.pt", seed=5)


def test_torch_and_onnx_runtime_agree(model_repo: Path) -> None:
    torch_engine = TorchEngine(
        model_repo / "circles.pt", device="cpu", half=False, replicas=2, default_imgsz=320
    )
    onnx_engine = OnnxEngine(model_repo / "shapes.onnx", threads=1, default_imgsz=320)
    assert torch_engine.info.names == onnx_engine.info.names == {0: "circle", 1: "square"}
    assert onnx_engine.info.dynamic and onnx_engine.info.imgsz == 320
    lb = letterbox(shapes_image(400, 300), network_shape((300, 400), 320, 32, rect=True))
    batch = lb.array[None]
    a, b = torch_engine.forward(batch, 0), onnx_engine.forward(batch, 0)
    assert a.shape == b.shape
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-3, atol=2e-2)
    # The replica of worker 1 gives the same answer as worker 0's.
    np.testing.assert_allclose(torch_engine.forward(batch, 1).numpy(), a.numpy(), atol=1e-5)


def test_pipeline_matches_ultralytics_predict(plain_model: Path, tmp_path: Path) -> None:
    image = shapes_image(500, 375, seed=3)
    params = PredictParams(conf=1e-6, iou=0.7, imgsz=320, max_det=50)
    theirs = YOLO(str(plain_model))(
        image, imgsz=320, conf=params.conf, iou=params.iou, max_det=50, verbose=False
    )[0]
    for engine in (
        TorchEngine(plain_model, device="cpu", half=False, replicas=1, default_imgsz=320),
        OnnxEngine(export_onnx(plain_model, tmp_path, 320), threads=1, default_imgsz=320),
    ):
        lb = letterbox(image, network_shape(image.shape[:2], 320, engine.info.stride, rect=True))
        (rows,) = run_nms(engine.forward(lb.array[None], 0), params, 80, end2end=False)
        ours = to_detections(rows, lb, engine.info.names)
        assert len(ours) == len(theirs.boxes) > 0, engine.format
        top = min(10, len(ours))
        np.testing.assert_allclose(
            [d["score"] for d in ours[:top]], theirs.boxes.conf[:top].numpy(), atol=2e-3
        )
        np.testing.assert_allclose([d["box"] for d in ours[:top]], theirs.boxes.xyxy[:top].numpy(), atol=1.5)
    torch.set_num_threads(1)


def test_not_a_model_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not onnx")
    with pytest.raises(UnsupportedModelError):
        OnnxEngine(bogus, threads=1, default_imgsz=320)


def test_onnx_exports_are_keyed_by_content(model_repo: Path, tmp_path: Path) -> None:
    # Two versions with the same name, size and mtime (saved in the same second) must not share one.
    a, b = tmp_path / "1" / "model.pt", tmp_path / "2" / "model.pt"
    for src, dst in (
        (model_repo / "animals" / "1" / "model.pt", a),
        (model_repo / "animals" / "2" / "model.pt", b),
    ):
        dst.parent.mkdir()
        dst.write_bytes(src.read_bytes())
    os.utime(a, (1_700_000_000, 1_700_000_000))
    os.utime(b, (1_700_000_000, 1_700_000_000))
    assert a.stat().st_size == b.stat().st_size
    cache = tmp_path / "cache"
    export_a, export_b = export_onnx(a, cache, 320), export_onnx(b, cache, 320)
    assert export_a != export_b
    assert export_onnx(a, cache, 320) == export_a  # cached


def test_fp16_batches_agree_with_fp32(model_repo: Path) -> None:
    # The CUDA plan's arithmetic (TorchEngine with half=True, a batch of images) run through torch's
    # CPU FP16 kernels: no GPU here, so this covers the code path, not CUDA itself.
    fp32 = TorchEngine(model_repo / "circles.pt", device="cpu", half=False, replicas=1, default_imgsz=320)
    fp16 = TorchEngine(model_repo / "circles.pt", device="cpu", half=True, replicas=1, default_imgsz=320)
    shape = network_shape((300, 400), 320, 32, rect=True)
    batch = np.stack([letterbox(shapes_image(400, 300, seed=s), shape).array for s in (1, 2)])
    a, b = fp32.forward(batch, 0), fp16.forward(batch, 0)
    assert fp16.memory_bytes() * 2 == fp32.memory_bytes()  # the weights are FP16
    assert b.shape == a.shape and b.shape[0] == 2
    assert torch.isfinite(b).all()
    assert not torch.equal(a, b)  # FP16 arithmetic ran: close to FP32, not bit-identical
    np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=2e-2, atol=0.5)
