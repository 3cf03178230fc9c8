"""Build serving/Dockerfile on this machine and run the image.

Docker Hub is unreachable, so the base image is local: ``ailab/debian:bookworm`` (debootstrap,
``molecule/images/build.sh``) plus python3-venv and the host's CA bundle for pip, which reaches
PyPI through the host network. That is the "slim Python" path of the Dockerfile: torch comes from
PyPI, which is the real cost of this test (~7 minutes and ~8 GB the first time on a 2-core
machine; docker's layer cache makes a rebuild with only code changes take seconds). The container
runs as its non-root user with a read-only root filesystem, as the chart runs it, on host
networking bound to 127.0.0.1, and must answer /v2/health/live and turn "healthy".
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from ailab_testsupport import free_port
from conftest import TEST_BASE, docker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def image(yolo_server_image: str) -> str:
    """The image, built once per session by conftest.py (the notebook image test builds on it)."""
    return yolo_server_image


@contextlib.contextmanager
def run_container(image: str, *docker_args: str) -> Iterator[tuple[str, int]]:
    """The image as the chart runs it (non-root, read-only root, /tmp writable) on 127.0.0.1."""
    port = free_port()
    name = f"ailab-yolo-test-{uuid.uuid4().hex[:8]}"
    docker(
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "--read-only",
        "--tmpfs",
        "/tmp",
        *docker_args,
        "-e",
        f"AILAB_SERVE_PORT={port}",
        "-e",
        "AILAB_SERVE_DEVICE=cpu",
        image,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    )
    try:
        yield name, port
    finally:
        logs = docker("logs", "--tail", "50", name, check=False)
        print(logs.stdout[-3000:], logs.stderr[-3000:])
        docker("rm", "-f", name, check=False)


@pytest.fixture
def server(image: str) -> Iterator[tuple[str, int]]:
    with run_container(image, "--tmpfs", "/models") as running:
        yield running


def wait_until_ready(name: str, url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        state = json.loads(docker("inspect", name).stdout)[0]["State"]
        assert state["Running"], f"the server exited ({state['ExitCode']})"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                assert response.status == 200
                return
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline, f"{url} did not answer within {timeout} s"
            time.sleep(2)


def inspect(image: str) -> dict[str, Any]:
    return json.loads(docker("image", "inspect", image).stdout)[0]["Config"]


def test_image_metadata(image: str) -> None:
    cfg = inspect(image)
    labels = cfg["Labels"]
    assert labels["org.opencontainers.image.licenses"] == "AGPL-3.0-only"
    assert "ultralytics" in labels["io.ailab.license.note"]
    assert labels["org.opencontainers.image.base.name"] == TEST_BASE
    assert cfg["User"] not in ("", "0", "root") and not cfg["User"].startswith("0:")
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["YOLO_OFFLINE"] == "1"
    assert cfg["Healthcheck"]["Test"][0] == "CMD"
    assert "/v2/health/live" in " ".join(cfg["Healthcheck"]["Test"])
    assert cfg["Entrypoint"] == ["ailab-serve"]
    assert cfg["Cmd"] == ["serve", "--host", "0.0.0.0", "--port", "8000"]


def test_cli_help_runs_offline(image: str) -> None:
    out = docker("run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp", image, "--help")
    assert "serve" in out.stdout


def test_container_answers_health_and_turns_healthy(server: tuple[str, int]) -> None:
    name, port = server
    wait_until_ready(name, f"http://127.0.0.1:{port}/v2/health/live")
    # Docker's own HEALTHCHECK (first probe after its 30 s interval) runs the same request.
    deadline = time.monotonic() + 120
    while (health := json.loads(docker("inspect", name).stdout)[0]["State"]["Health"]["Status"]) != "healthy":
        assert health != "unhealthy" and time.monotonic() < deadline, f"health is {health}"
        time.sleep(3)


def test_container_serves_a_pt_model_on_cpu(image: str, tmp_path: Path) -> None:
    """A request, not a probe: the image's own CPU plan (ONNX export, OpenVINO) answers a .pt model."""
    models = tmp_path / "models"
    models.mkdir()
    # In a child process: torch must not be imported next to the collection's module tests.
    save = f"from ultralytics import YOLO; YOLO('yolov8n.yaml').save({str(models / 'yolo.pt')!r})"
    subprocess.run(
        [sys.executable, "-c", save], check=True, timeout=300, env={**os.environ, "YOLO_OFFLINE": "1"}
    )
    models.chmod(0o755)
    (models / "yolo.pt").chmod(0o644)
    ok, jpeg = cv2.imencode(".jpg", np.full((480, 640, 3), 200, np.uint8))
    assert ok
    with run_container(image, "-v", f"{models}:/models:ro") as (name, port):
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(name, f"{base}/v2/health/ready")
        response = httpx.post(
            f"{base}/v1/predict/yolo", files={"file": ("img.jpg", jpeg.tobytes(), "image/jpeg")}, timeout=300
        )
        assert response.status_code == 200, response.text
        assert response.json()["engine"] == "openvino"
        assert response.json()["images"][0]["width"] == 640
