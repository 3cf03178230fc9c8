"""roles/yolo_server tasks/image.yml: build on the controller, save, copy and import on the nodes.

Runs the role's image step for real against this machine's docker with a tiny build context (the
real image is tests/integration/serving_image/test_yolo_server_image.py), with localhost standing in
for a node and a stand-in ``k3s`` on PATH that records its arguments: no containerd runs here.
Asserts the import happens once per built image and that an unchanged second run changes nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.executable).parent
DEBIAN = "ailab/debian:bookworm"
REPOSITORY = "ailab/yolo-server-import-test"


def _recap(stdout: str) -> dict[str, int]:
    match = re.search(r"^localhost\s*:\s*(.*)$", stdout.rsplit("PLAY RECAP", 1)[-1], re.MULTILINE)
    assert match, stdout[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def test_build_save_and_import_once(tmp_path: Path) -> None:
    if shutil.which("docker") is None:
        pytest.fail("docker is not installed: apt-get install -y docker.io")
    subprocess.run([str(ROOT / "scripts" / "start-dockerd.sh")], check=True, timeout=120)
    if subprocess.run(["docker", "image", "inspect", DEBIAN], capture_output=True, check=False).returncode:
        subprocess.run([str(ROOT / "molecule" / "images" / "build.sh")], check=True, timeout=900)
    link = ROOT / ".collections" / "ansible_collections" / "ailab" / "platform"
    if not link.exists():
        pytest.fail(f"{link} is missing: run `make collection`")

    context = tmp_path / "context"
    context.mkdir()
    dockerfile = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo import-test > /marker\n"
    (context / "Dockerfile").write_text(dockerfile)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    calls = tmp_path / "k3s.calls"
    (fake_bin / "k3s").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (fake_bin / "k3s").chmod(0o755)
    playbook = tmp_path / "image.yml"
    playbook.write_text(
        textwrap.dedent("""\
        - name: Run the yolo_server image step
          hosts: localhost
          connection: local
          gather_facts: false
          tasks:
            - name: Build, save and import the image
              ansible.builtin.include_role:
                name: ailab.platform.yolo_server
                tasks_from: image.yml
        """)
    )
    archive_dir = tmp_path / "archives"
    extra = {
        "ansible_python_interpreter": sys.executable,
        "yolo_server_image_build_context": str(context),
        "yolo_server_image_build_base": DEBIAN,
        "yolo_server_image_repository": REPOSITORY,
        "yolo_server_image_import_hosts": ["localhost"],
        "yolo_server_image_archive_dir": str(archive_dir),
    }
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".collections"),
        "ANSIBLE_NOCOLOR": "1",
        "PATH": os.pathsep.join([str(fake_bin), str(VENV_BIN), os.environ["PATH"]]),
    }
    cmd = [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", str(playbook), "-e", json.dumps(extra)]
    try:
        runs = []
        for _ in range(2):
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=600)
            assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]
            runs.append(_recap(out.stdout))
        image_id = subprocess.run(
            ["docker", "image", "inspect", "-f", "{{.Id}}", f"{REPOSITORY}:0.1.0"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    finally:
        rm = ["docker", "image", "rm", "-f", f"{REPOSITORY}:0.1.0"]
        subprocess.run(rm, capture_output=True, check=False)

    archive = archive_dir / "yolo-server-0.1.0.tar"
    assert calls.read_text().splitlines() == [f"ctr images import {archive}"]  # once, not twice
    assert (archive_dir / f"{image_id.removeprefix('sha256:')}.imported").is_file()
    assert runs[0]["changed"] > 0
    assert runs[1]["changed"] == 0, runs
