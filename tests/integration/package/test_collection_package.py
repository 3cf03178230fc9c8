"""The checkout as a user gets it: a fresh ``git clone`` of HEAD, with only the Python requirements.

Runs the mission's plain command right after clone, and shows that the clone's own collection wins
over a stale copy installed in ``~/.ansible/collections`` (a temporary HOME here). The clone is of
the committed tree (HEAD): commit before running these tests on a change.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.executable).parent


def user_env(home: Path) -> dict[str, str]:
    """A shell of a new user: no ANSIBLE_* settings (the Makefile exports some), this HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    return {**env, "HOME": str(home), "PATH": f"{VENV_BIN}{os.pathsep}{env['PATH']}"}


def run(cmd: list[str], cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, env=user_env(home), capture_output=True, text=True, check=False, timeout=300
    )


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("clone") / "ailab"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(target)], check=True, timeout=120)
    return target


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def test_the_plain_command_works_right_after_clone(clone: Path, home: Path) -> None:
    out = run(["ansible-playbook", "site.yml", "-i", "inventories/lab", "--syntax-check"], clone, home)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_checkouts_collection_wins_over_an_installed_copy(clone: Path, home: Path) -> None:
    # A stale copy where Molecule's prerun used to install one: its module says so in its docs.
    stale = home / ".ansible" / "collections" / "ansible_collections" / "ailab" / "platform"
    (stale / "plugins" / "modules").mkdir(parents=True)
    (stale / "meta").mkdir()
    (stale / "meta" / "runtime.yml").write_text("---\nrequires_ansible: '>=2.15.0'\n")
    module = (clone / "plugins" / "modules" / "service_ready.py").read_text()
    (stale / "plugins" / "modules" / "service_ready.py").write_text(
        module.replace("short_description:", "short_description: STALE COPY", 1)
    )
    out = run(["ansible-doc", "ailab.platform.service_ready"], clone, home)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "STALE COPY" not in out.stdout
    assert str(clone / ".collections") in out.stdout  # the path ansible-doc names is the clone's


def test_molecule_installs_no_copy_of_the_collection() -> None:
    # Molecule's prerun builds the collection and installs it into ~/.ansible/collections.
    config = ROOT / ".config" / "molecule" / "config.yml"
    assert "prerun: false" in config.read_text().splitlines()
