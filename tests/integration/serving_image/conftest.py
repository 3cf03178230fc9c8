"""The YOLO server image, built once per session: its own test and the notebook image's use it.

Docker Hub is unreachable, so the base image is local: ``ailab/debian:bookworm`` (debootstrap,
``molecule/images/build.sh``) plus python3-venv and the host's CA bundle for pip, which reaches
PyPI through the host network. torch from PyPI is the real cost (~7 minutes and ~8 GB the first
time on a 2-core machine; docker's layer cache makes a rebuild with only code changes take
seconds).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SERVING = ROOT / "serving"
DEBIAN = "ailab/debian:bookworm"
TEST_BASE = "ailab/serving-test-base:bookworm"
IMAGE = "ailab/yolo-server:test"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")

BASE_DOCKERFILE = """\
FROM {debian}
RUN apt-get update && apt-get install -y --no-install-recommends python3-venv \\
    && rm -rf /var/lib/apt/lists/*
# pip in the build goes through the same TLS-intercepting proxy as the host.
COPY ca-certificates.crt /usr/local/share/ailab-test-ca.crt
ENV PIP_CERT=/usr/local/share/ailab-test-ca.crt REQUESTS_CA_BUNDLE=/usr/local/share/ailab-test-ca.crt
CMD []
"""


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check:
        assert out.returncode == 0, f"docker {' '.join(args)}:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    return out


@pytest.fixture(scope="session")
def yolo_server_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """serving/Dockerfile built on the local Debian base as ``ailab/yolo-server:test``."""
    if shutil.which("docker") is None:
        pytest.fail("docker is not installed: apt-get install -y docker.io")
    subprocess.run([str(ROOT / "scripts" / "start-dockerd.sh")], check=True, timeout=120)
    for needed in ("pyproject.toml", "README.md", "src/ailab_serving/cli.py"):
        assert (SERVING / needed).is_file(), f"serving/{needed} is missing: the image cannot be built"
    if docker("image", "inspect", DEBIAN, check=False).returncode != 0:
        subprocess.run([str(ROOT / "molecule" / "images" / "build.sh")], check=True, timeout=900)

    context = tmp_path_factory.mktemp("serving-test-base")
    (context / "Dockerfile").write_text(BASE_DOCKERFILE.format(debian=DEBIAN))
    shutil.copyfile(HOST_CA, context / "ca-certificates.crt")
    docker("build", "--network", "host", "-t", TEST_BASE, str(context), timeout=600)

    start = time.monotonic()
    docker(
        "build",
        "--network",
        "host",
        "--build-arg",
        f"BASE_IMAGE={TEST_BASE}",
        "-t",
        IMAGE,
        str(SERVING),
        timeout=2100,
    )
    print(f"built {IMAGE} in {time.monotonic() - start:.0f} s")
    return IMAGE
