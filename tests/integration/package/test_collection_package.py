"""The checkout as a user gets it: a fresh ``git clone`` of HEAD, with only the Python requirements.

Runs the mission's plain command right after clone, and shows that the clone's own collection wins
over a stale copy installed in ``~/.ansible/collections`` (a temporary HOME here). The clone is of
the committed tree (HEAD): commit before running these tests on a change.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.executable).parent


def user_env(home: Path) -> dict[str, str]:
    """A shell of a new user: no ANSIBLE_* settings (the Makefile exports some), this HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    return {**env, "HOME": str(home), "PATH": f"{VENV_BIN}{os.pathsep}{env['PATH']}"}


def run(
    cmd: list[str], cwd: Path, home: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**user_env(home), **(extra_env or {})}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=300)


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


def _fqcn_collections() -> set[str]:
    """The collections roles/, playbooks/ and site.yml call by FQCN: modules, filters and tests."""
    module = re.compile(r"^\s*(?:- )?([a-z_]+\.[a-z_]+)\.[a-z_0-9]+:\s*$", re.MULTILINE)
    plugin = re.compile(r"(?:\||\bis(?: not)?)\s*([a-z_]+\.[a-z_]+)\.[a-z_0-9]+")
    used = set()
    for path in [ROOT / "site.yml", *ROOT.glob("playbooks/*.yml"), *ROOT.glob("roles/*/*/*.yml")]:
        used.update(module.findall(path.read_text()))
    for path in [
        *ROOT.glob("playbooks/*.yml"),
        *ROOT.glob("roles/*/*/*.yml"),
        *ROOT.glob("roles/*/templates/*"),
    ]:
        used.update(plugin.findall(path.read_text()))
    return used - {"ansible.builtin", "ailab.platform"}


def _bundled_version(collection: str) -> Version:
    namespace, name = collection.split(".")
    manifest = next(
        Path(p) for p in sys.path if (Path(p) / "ansible_collections" / namespace / name).is_dir()
    )
    info = json.loads((manifest / "ansible_collections" / namespace / name / "MANIFEST.json").read_text())
    return Version(info["collection_info"]["version"])


def test_dependencies_cover_every_collection_the_roles_call_and_the_bundle_meets_them() -> None:
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    requirements = yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]
    assert {
        "amazon.aws",
        "kubernetes.core",
        "community.general",
        "community.docker",
        "ansible.posix",
    } <= _fqcn_collections()
    assert set(galaxy["dependencies"]) == _fqcn_collections()
    assert {r["name"]: r["version"] for r in requirements} == galaxy["dependencies"]
    for collection, versions in galaxy["dependencies"].items():
        assert _bundled_version(collection) in SpecifierSet(versions), (collection, versions)


def test_the_built_artifact_installs_offline_and_its_modules_load(tmp_path: Path, home: Path) -> None:
    out = run(
        ["ansible-galaxy", "collection", "build", "--output-path", str(tmp_path), str(ROOT)], ROOT, home
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (tarball,) = tmp_path.glob("ailab-platform-*.tar.gz")
    assert tarball.stat().st_size < 2_000_000, "build_ignore lets build outputs into the artifact"
    with tarfile.open(tarball) as archive:
        top = {name.split("/", 1)[0] for name in archive.getnames()}
    assert not top & {".venv", ".venv-labelstudio", ".collections", ".ansible", ".pytest_cache"}, top
    installed = tmp_path / "installed"
    install = ["ansible-galaxy", "collection", "install", "--no-deps", str(tarball), "-p", str(installed)]
    out = run(install, tmp_path, home)
    assert out.returncode == 0, out.stdout + out.stderr
    copy = installed / "ansible_collections" / "ailab" / "platform"
    from_installed = {"ANSIBLE_COLLECTIONS_PATH": str(installed)}
    doc = run(["ansible-doc", "ailab.platform.label_studio_export"], tmp_path, home, from_installed)
    assert doc.returncode == 0, doc.stdout + doc.stderr
    assert str(copy) in doc.stdout
    playbook = tmp_path / "use.yml"
    playbook.write_text(
        "- name: Use the installed roles\n  hosts: all\n  roles: [ailab.platform.preflight]\n"
    )
    syntax_check = ["ansible-playbook", "-i", "localhost,", str(playbook), "--syntax-check"]
    check = run(syntax_check, tmp_path, home, from_installed)
    assert check.returncode == 0, check.stdout + check.stderr


def test_ssh_host_keys_are_checked_unless_the_lab_opts_out(clone: Path, home: Path) -> None:
    def host_key_checking(extra_env: dict[str, str]) -> bool:
        out = run(["ansible-config", "dump", "--format", "json", "-t", "base"], clone, home, extra_env)
        assert out.returncode == 0, out.stderr
        (setting,) = [s for s in json.loads(out.stdout) if s.get("name") == "HOST_KEY_CHECKING"]
        return bool(setting["value"])

    assert host_key_checking({}) is True
    assert host_key_checking({"ANSIBLE_HOST_KEY_CHECKING": "false"}) is False
    # The command that records the keys is a valid playbook.
    out = run(
        ["ansible-playbook", "playbooks/known_hosts.yml", "-i", "inventories/lab", "--syntax-check"],
        clone,
        home,
    )
    assert out.returncode == 0, out.stdout + out.stderr
