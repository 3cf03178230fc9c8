"""Helpers shared by the serving tests and the benchmark: offline models, images, server processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from ailab_testsupport import free_port, stop_process, wait_http

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_VERBOSE", "false")

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
BUS_JPG = SHARED / "data" / "images" / "bus.jpg"
BUS_MISSING = f"needs {BUS_JPG} (the shared data next to the checkout); it is absent here"


def make_model(path: Path, names: dict[int, str], *, favour: int = 0, seed: int = 0) -> Path:
    """A randomly initialised YOLOv8n saved as an ultralytics ``.pt``, built offline.

    Random weights give near-zero class scores; raising the bias of class ``favour`` in every head
    level makes every anchor score sigmoid(3) ~ 0.95 for that class, so detections are plentiful and
    deterministic (their boxes are random but fixed by the seed).
    """
    import torch  # noqa: PLC0415  (heavy; only the tests that make models pay for it)
    from ultralytics import YOLO  # noqa: PLC0415
    from ultralytics.nn.tasks import DetectionModel  # noqa: PLC0415

    torch.manual_seed(seed)
    yolo = YOLO("yolov8n.yaml")
    net = DetectionModel("yolov8n.yaml", nc=len(names), verbose=False)
    net.names = dict(names)
    bias = torch.full((len(names),), -3.0)
    bias[favour] = 3.0
    for branch in net.model[-1].cv3:
        branch[-1].bias.data[:] = bias
    yolo.model = net
    path.parent.mkdir(parents=True, exist_ok=True)
    yolo.save(str(path))
    return path


def make_plain_model(path: Path, seed: int = 0) -> Path:
    """``YOLO("yolov8n.yaml")`` as is (80 classes, random weights): the benchmark's model."""
    import torch  # noqa: PLC0415
    from ultralytics import YOLO  # noqa: PLC0415

    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    YOLO("yolov8n.yaml").save(str(path))
    return path


def export_onnx(pt: Path, target: Path, imgsz: int = 640) -> Path:
    from ultralytics import YOLO  # noqa: PLC0415

    work = target.parent / f"_export_{pt.stem}.pt"
    work.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pt, work)
    out = Path(
        YOLO(str(work)).export(format="onnx", dynamic=True, simplify=False, imgsz=imgsz, verbose=False)
    )
    out.replace(target)
    work.unlink()
    return target


def shapes_image(width: int = 640, height: int = 480, seed: int = 0) -> np.ndarray:
    """A BGR image of coloured shapes on a plain background (no shared data needed)."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 200, np.uint8)
    size = max(4, min(width, height) // 8)
    for _ in range(4):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        if rng.random() < 0.5:
            cv2.circle(img, (x, y), size, colour, -1)
        else:
            cv2.rectangle(img, (x - size, y - size), (x + size, y + size), colour, -1)
    return img


def jpeg(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


def make_video(path: Path, frames: int = 12, size: tuple[int, int] = (320, 240), fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for i in range(frames):
        writer.write(shapes_image(size[0], size[1], seed=i))
    writer.release()
    return path


@contextlib.contextmanager
def run_server(
    env: dict[str, str], log: Path, *, timeout: float = 90, command: list[str] | None = None
) -> Iterator[str]:
    """``ailab-serve serve`` on a free loopback port; yields its base URL, stops it afterwards.

    ``command`` replaces ``python -m ailab_serving serve`` of this interpreter (another install).
    """
    port = free_port()
    full_env = {
        **os.environ,
        "AILAB_SERVE_HOST": "127.0.0.1",
        "AILAB_SERVE_PORT": str(port),
        "AILAB_SERVE_LOG_LEVEL": "info",
        **env,
    }
    # Credentials for S3 come from the standard variables; moto accepts any.
    full_env.setdefault("AWS_ACCESS_KEY_ID", "testing")
    full_env.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command or [sys.executable, "-m", "ailab_serving", "serve"],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/v2/health/ready", proc, log, timeout, "the server")
        yield url
    finally:
        stop_process(proc)
