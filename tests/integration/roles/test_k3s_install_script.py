"""The online k3s install runs only a script that matches the SHA-256 pinned for k3s_version.

roles/k3s/tasks/install.yml runs on localhost with k3s_install_dir in a temporary directory (no k3s
there, so an install is needed) and the script served from a local file:// URL: the raw GitHub URL
is unreachable from the test machines. The script is never run: both cases fail before that.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
PLAYBOOK = """
- name: Install k3s online
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Run the role's install step
      ansible.builtin.include_role:
        name: ailab.platform.k3s
        tasks_from: install.yml
"""


def run_install(tmp_path: Path, checksums: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "install.sh"
    script.write_text('#!/bin/sh\ntouch "$(dirname "$0")/ran"\n')
    (tmp_path / "bin").mkdir()
    playbook = tmp_path / "k3s.yml"
    playbook.write_text(PLAYBOOK)
    extra = {
        "ansible_python_interpreter": sys.executable,
        "k3s_mode": "server",
        "k3s_service": "k3s-ailab-test-absent",
        "k3s_install_dir": str(tmp_path / "bin"),
        "k3s_install_script_url": script.as_uri(),
        "k3s_install_script_checksums": checksums,
    }
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", str(playbook)]
    return subprocess.run(
        [*cmd, "-e", json.dumps(extra)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
        timeout=300,
    )


def test_no_pinned_checksum_fails_before_downloading(tmp_path: Path) -> None:
    run = run_install(tmp_path, {})
    assert run.returncode != 0
    assert "k3s_install_script_checksums has no SHA-256 for k3s_version=" in run.stdout
    assert not (tmp_path / "bin" / "k3s-install.sh").exists()


def test_a_script_that_differs_from_the_pinned_checksum_never_runs(tmp_path: Path) -> None:
    version = yaml.safe_load((ROOT / "roles" / "k3s" / "defaults" / "main.yml").read_text())["k3s_version"]
    run = run_install(tmp_path, {version: hashlib.sha256(b"the reviewed script").hexdigest()})
    assert run.returncode != 0
    assert "checksum" in run.stdout.lower(), run.stdout[-3000:]
    assert not (tmp_path / "bin" / "k3s-install.sh").exists()
    assert not (tmp_path / "bin" / "ran").exists()


def test_the_shipped_pin_covers_the_pinned_version_and_refuses_another_script(tmp_path: Path) -> None:
    defaults = yaml.safe_load((ROOT / "roles" / "k3s" / "defaults" / "main.yml").read_text())
    shipped = defaults["k3s_install_script_checksums"]
    assert len(shipped[defaults["k3s_version"]]) == 64
    run = run_install(tmp_path, shipped)
    assert run.returncode != 0
    assert "has no SHA-256" not in run.stdout
    assert "checksum" in run.stdout.lower(), run.stdout[-3000:]
    assert not (tmp_path / "bin" / "ran").exists()
