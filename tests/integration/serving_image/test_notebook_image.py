"""Build notebook/Dockerfile on this machine and import ultralytics and mlflow inside the image.

To keep CI's time, the image is built on the YOLO server test image (``yolo_server_image`` of
conftest.py, built once per session, also by test_yolo_server_image.py), with
``BASE_SITE_PACKAGES`` pointing at its venv: torch, ultralytics, mlflow and boto3 come from those
layers (notebook/constraints.txt pins them to the server's versions, so pip finds them satisfied)
and this build only adds JupyterLab and jupyterhub-singleuser (~1 minute). The default base
(python:3.12-slim, torch from PyPI) is not built here: Docker Hub is unreachable.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, docker

NOTEBOOK = ROOT / "notebook"
IMAGE = "ailab/notebook:test"
SERVER_SITE_PACKAGES = "/opt/ailab-serving/lib/python3.11/site-packages"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def image(yolo_server_image: str) -> str:
    start = time.monotonic()
    docker(
        "build",
        "--network",
        "host",
        "--build-arg",
        f"BASE_IMAGE={yolo_server_image}",
        "--build-arg",
        f"BASE_SITE_PACKAGES={SERVER_SITE_PACKAGES}",
        "-t",
        IMAGE,
        str(NOTEBOOK),
        timeout=1200,
    )
    print(f"built {IMAGE} in {time.monotonic() - start:.0f} s")
    return IMAGE


def run(image: str, *cmd: str) -> str:
    """``cmd`` in the image as KubeSpawner runs it: uid 1000, no network, /home/jovyan writable."""
    out = docker("run", "--rm", "--network", "none", "--user", "1000:100", image, *cmd, timeout=300)
    return out.stdout


def config(image: str) -> dict[str, Any]:
    return json.loads(docker("image", "inspect", image).stdout)[0]["Config"]


def test_image_runs_jupyterhub_singleuser_as_jovyan(image: str) -> None:
    cfg = config(image)
    assert cfg["User"] == "1000:100"
    assert cfg["Entrypoint"] in (None, [])  # the server image's ailab-serve is gone
    assert cfg["Cmd"] == ["jupyterhub-singleuser"]
    assert cfg["WorkingDir"] == "/home/jovyan"
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["YOLO_OFFLINE"] == "1"
    assert env["HOME"] == "/home/jovyan"  # not the server image's /tmp
    assert env["YOLO_CONFIG_DIR"].startswith("/home/jovyan/")
    assert cfg["Labels"]["org.opencontainers.image.title"] == "ailab-notebook"
    assert run(image, "jupyterhub-singleuser", "--version").strip() == "5.5.0"  # the hub's version


def test_ultralytics_mlflow_and_boto3_import_offline(image: str) -> None:
    code = (
        "import boto3, jupyterlab, mlflow, torch, ultralytics; from ultralytics import YOLO; "
        "m = YOLO('yolov8n.yaml'); "
        "print(ultralytics.__version__, mlflow.__version__, boto3.__version__, torch.__version__, "
        "type(m.model).__name__)"
    )
    versions = run(image, "python", "-c", code).split()[-5:]
    pins = dict(
        line.split("==", 1)
        for line in (NOTEBOOK / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert versions[:3] == [pins["ultralytics"], pins["mlflow"], pins["boto3"]]
    assert versions[3].split("+")[0] == pins["torch"]  # PyPI's CUDA build reports 2.14.1+cu130
    assert versions[4] == "DetectionModel"  # built offline from the yaml, no weights downloaded


def test_torch_comes_from_the_server_layers(image: str) -> None:
    # pip found the server's torch satisfied: the notebook venv holds none of its own.
    where = run(image, "python", "-c", "import torch; print(torch.__file__)").strip()
    assert where.startswith(f"{SERVER_SITE_PACKAGES}/torch/")
    assert Path(where).parts[1] == "opt"
