"""A plain install (serving/README.md: pip with the constraints, no extras) serves a ``.pt`` on CPU.

The repository's ``.venv`` holds every extra and test tool, so a base dependency that only an extra
brings would go unseen there: this test runs the server from its own environment instead.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest
from plain_install import plain_install
from serving_testlib import REPO, jpeg, make_plain_model, run_server, shapes_image

VENV = REPO / "tests" / "output" / "serving-plain-venv"


@pytest.fixture(scope="module")
def plain_bin() -> Path:
    return plain_install(VENV)


def test_the_plain_install_has_no_extras(plain_bin: Path) -> None:
    probe = "import importlib.util as u; print(u.find_spec('mlflow') is None, u.find_spec('pytest') is None)"
    out = subprocess.run([str(plain_bin / "python"), "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


def test_the_plain_install_serves_a_pt_on_cpu(plain_bin: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    make_plain_model(models / "yolo.pt", seed=4)
    env = {
        "AILAB_SERVE_MODEL_DIR": str(models),
        "AILAB_SERVE_CACHE_DIR": str(tmp_path / "cache"),
        "AILAB_SERVE_DEVICE": "cpu",
        "YOLO_CONFIG_DIR": str(tmp_path / "yolo"),
        # Nothing of the repository's environment may leak into the plain one (no MLflow there).
        "MLFLOW_TRACKING_URI": "",
        "AILAB_SERVE_MLFLOW_URI": "",
        "PYTHONPATH": "",
        "VIRTUAL_ENV": str(VENV),
        "PATH": os.pathsep.join([str(plain_bin), "/usr/bin", "/bin"]),
    }
    with run_server(
        env, tmp_path / "server.log", timeout=180, command=[str(plain_bin / "ailab-serve"), "serve"]
    ) as url:
        image = jpeg(shapes_image(640, 480, seed=9))
        response = httpx.post(
            f"{url}/v1/predict/yolo", files={"file": ("img.jpg", image, "image/jpeg")}, timeout=180
        )
        assert response.status_code == 200, response.text
        body = response.json()
        # The CPU plan's own choice: the .pt was exported to ONNX and runs on the fastest runtime.
        assert body["engine"] == "openvino"
        assert body["images"][0]["width"] == 640
        runtime = httpx.get(f"{url}/v1/models", timeout=30).json()["runtime"]
        assert runtime["backend"] == "openvino"
