"""The helm role installs the pinned helm from a release mirror, verifies it, and is idempotent.

The mirror is a local directory reached through a file:// URL (the official download host is
unreachable from the test machines); its archive holds the helm v3 that `make kube-build` builds,
laid out as the official release archives are (linux-<arch>/helm). That archive is not the official
one, so the role's shipped pin refuses it: the tests pin its digest, or none, as a lab would.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from ailab_testsupport import run_local_playbook

ROOT = Path(__file__).resolve().parents[3]
BUILT_HELM = ROOT / "tests" / "kube" / ".build" / "bin" / "helm"
HELM_VERSION = yaml.safe_load((ROOT / "roles" / "helm" / "defaults" / "main.yml").read_text())["helm_version"]
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
PLAYBOOK = """
- name: Install helm on the controller
  hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: ailab.platform.helm
"""


@pytest.fixture(scope="module")
def built_helm() -> Path:
    if not BUILT_HELM.exists():
        pytest.fail(f"{BUILT_HELM} is missing: run make kube-build")
    return BUILT_HELM


def make_mirror(directory: Path, helm: Path, tamper: bool = False) -> str:
    archive = directory / f"helm-{HELM_VERSION}-linux-{ARCH}.tar.gz"
    directory.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(helm, arcname=f"linux-{ARCH}/helm")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if tamper:
        digest = hashlib.sha256(b"another archive").hexdigest()
    Path(f"{archive}.sha256sum").write_text(f"{digest}  {archive.name}\n")
    return directory.as_uri()


def pinned(digest: str) -> str:
    return json.dumps({"helm_checksums": {HELM_VERSION: {ARCH: digest}}})


def archive_digest(mirror: str) -> str:
    archive = Path(mirror.removeprefix("file://")) / f"helm-{HELM_VERSION}-linux-{ARCH}.tar.gz"
    return hashlib.sha256(archive.read_bytes()).hexdigest()


NO_PIN = json.dumps({"helm_checksums": {}})


def run_role(tmp_path: Path, mirror: str, install_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "helm.yml"
    playbook.write_text(PLAYBOOK)
    # No helm on PATH: the role must find the one it installed in helm_install_dir.
    path = os.pathsep.join([str(Path(sys.executable).parent), "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
    return run_local_playbook(
        playbook,
        tmp_path,
        "-e",
        f"helm_download_base_url={mirror}",
        "-e",
        f"helm_install_dir={install_dir}",
        *extra,
        env={"PATH": path},
    )


def changed(run: subprocess.CompletedProcess[str]) -> int:
    recap = run.stdout.rsplit("PLAY RECAP", 1)[-1]
    return int(recap.split("changed=", 1)[1].split()[0])


def test_installs_the_pinned_helm_then_changes_nothing(tmp_path: Path, built_helm: Path) -> None:
    mirror = make_mirror(tmp_path / "mirror", built_helm)
    install_dir = tmp_path / "bin"
    install_dir.mkdir()
    downloads_before = set(Path("/tmp").glob("ailab-helm.*"))

    pin = pinned(archive_digest(mirror))
    first = run_role(tmp_path, mirror, install_dir, "-e", pin)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert changed(first) >= 1
    installed = install_dir / "helm"
    assert installed.stat().st_mode & 0o777 == 0o755
    version = subprocess.run(
        [str(installed), "version", "--template", "{{.Version}}"], capture_output=True, text=True, check=True
    )
    assert version.stdout.strip() == HELM_VERSION
    assert set(Path("/tmp").glob("ailab-helm.*")) == downloads_before, (
        "the download directory was left behind"
    )

    second = run_role(tmp_path, mirror, install_dir, "-e", pin)
    assert second.returncode == 0, second.stdout[-4000:]
    assert changed(second) == 0


def test_unpinned_the_hosts_checksum_refuses_tampering(tmp_path: Path, built_helm: Path) -> None:
    mirror = make_mirror(tmp_path / "mirror", built_helm, tamper=True)
    install_dir = tmp_path / "bin"
    install_dir.mkdir()

    run = run_role(tmp_path, mirror, install_dir, "-e", NO_PIN)
    assert run.returncode != 0
    assert "helm_checksums has no SHA-256" in run.stdout
    assert "checksum" in run.stdout.lower()
    assert not (install_dir / "helm").exists()


def test_the_shipped_pin_refuses_an_unofficial_archive(tmp_path: Path, built_helm: Path) -> None:
    defaults = yaml.safe_load((ROOT / "roles" / "helm" / "defaults" / "main.yml").read_text())
    shipped = defaults["helm_checksums"][HELM_VERSION]
    assert set(shipped) == {"amd64", "arm64"}
    assert all(len(value) == 64 and int(value, 16) >= 0 for value in shipped.values())

    mirror = make_mirror(tmp_path / "mirror", built_helm)
    install_dir = tmp_path / "bin"
    install_dir.mkdir()
    run = run_role(tmp_path, mirror, install_dir)
    assert run.returncode != 0
    assert "checksum" in run.stdout.lower(), run.stdout[-3000:]
    assert not (install_dir / "helm").exists()


def test_the_pinned_checksum_wins_over_the_download_hosts(tmp_path: Path, built_helm: Path) -> None:
    # A forged archive with a matching .sha256sum on the same host: only the pinned value catches it.
    mirror = make_mirror(tmp_path / "mirror", built_helm)
    install_dir = tmp_path / "bin"
    install_dir.mkdir()
    run = run_role(
        tmp_path, mirror, install_dir, "-e", pinned(hashlib.sha256(b"the real archive").hexdigest())
    )
    assert run.returncode != 0
    assert "checksum" in run.stdout.lower()
    assert not (install_dir / "helm").exists()

    run = run_role(tmp_path, mirror, install_dir, "-e", pinned(archive_digest(mirror)))
    assert run.returncode == 0, run.stdout[-4000:]
    assert (install_dir / "helm").exists()
    assert "helm_checksums has no SHA-256" not in run.stdout
