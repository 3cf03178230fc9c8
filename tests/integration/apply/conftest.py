"""Fixtures of the apply suite: real playbooks against a real Kubernetes API (tests/kube/).

One control plane per test session (etcd, kube-apiserver, controller-manager, scheduler, kwok),
with the 3-node lab of the inventory the tests write: ``lab-server`` (server), ``lab-cpu-1`` and
``lab-gpu-1`` (agents; the GPU node has ``nvidia.com/gpu: 2`` and ``nvidia.com/gpu.present=true``).
Build the binaries first with ``make kube-build``; without them every test here fails, on purpose.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane import (  # the launcher lives with the binaries it starts (tests/kube)
    ControlPlane,
    NodeSpec,
    lab_nodes,
    missing_binaries,
)

ROOT = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.executable).parent
# The real chart sources live beside the checkout (../shared/charts), never inside it.
SHARED_CHARTS = ROOT.parent / "shared" / "charts"
# The inventory's lab_loadbalancer_range. TEST-NET-2 (RFC 5737): written into Services, never used.
LOADBALANCER_RANGE = "198.51.100.240-198.51.100.250"


@dataclass
class KubeCluster:
    """What tests get from ``kube_cluster``: the API's address, a kubeconfig, and the nodes."""

    control_plane: ControlPlane

    @property
    def kubeconfig(self) -> str:
        return self.control_plane.kubeconfig

    @property
    def server(self) -> str:
        return self.control_plane.server

    @property
    def nodes(self) -> list[str]:
        """Names of the nodes the API holds now."""
        return self.control_plane.nodes

    @property
    def bin_dir(self) -> Path:
        """Where helm and kubectl are (put it first on PATH for ansible-playbook)."""
        return self.control_plane.bin_dir

    @property
    def loadbalancer_range(self) -> str:
        return LOADBALANCER_RANGE

    def add_node(
        self,
        name: str,
        *,
        labels: Mapping[str, str] | None = None,
        taints: Sequence[Mapping[str, str]] = (),
        capacity: Mapping[str, str] | None = None,
        control_plane: bool = False,
    ) -> None:
        """Register a fake node and wait until kwok made it Ready."""
        spec = NodeSpec(name, dict(labels or {}), tuple(taints), dict(capacity or {}), control_plane)
        self.control_plane.add_node(spec)

    def pod_log(self, text: str) -> Any:
        """Context manager: kwok serves ``text`` as every container's log (``kubectl logs``)."""
        return self.control_plane.pod_log(text)

    def remove_node(self, name: str) -> None:
        """Delete the node from the API (a host that left the cluster) and wait until it is gone."""
        self.control_plane.remove_node(name)

    def env(self) -> dict[str, str]:
        """os.environ with KUBECONFIG and the bin dir (helm, kubectl) on PATH."""
        return self.control_plane.env()


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """A real control plane with the 3-node lab, shared by the session and stopped at its end."""
    missing = missing_binaries()
    if missing:
        # CI never skips silently: a missing build is an error with the fix in the message.
        pytest.fail(f"test control plane not built ({', '.join(missing)} missing): run make kube-build")
    workdir = tmp_path_factory.mktemp("kube")
    # No fallback range for the LoadBalancer stand-in: only an IPAddressPool (or a pinned
    # metallb.io/loadBalancerIPs) gives a Service an address, so a missing pool shows.
    with ControlPlane(lab_nodes(), workdir=workdir) as cp:
        yield KubeCluster(cp)


@pytest.fixture(scope="session")
def shared_charts() -> Path:
    """../shared/charts next to the checkout: the real chart sources, for offline installs."""
    if not (SHARED_CHARTS / "metallb" / "Chart.yaml").is_file():
        pytest.skip(
            f"{SHARED_CHARTS} is missing (the vendored chart sources beside the checkout); "
            "these tests install charts from it because chart repositories are unreachable"
        )
    return SHARED_CHARTS


# ---------------------------------------------------------------------------------------------
# Running playbooks


@dataclass
class PlaybookRun:
    """An ansible-playbook run: exit status, output and the PLAY RECAP per host."""

    returncode: int
    stdout: str
    stderr: str

    def recap(self, host: str = "localhost") -> dict[str, int]:
        """Return the PLAY RECAP counters (ok, changed, failed, ...) of ``host``."""
        section = self.stdout.rsplit("PLAY RECAP", 1)[-1]
        match = re.search(rf"^{re.escape(host)}\s*:\s*(.*)$", section, re.MULTILINE)
        assert match, f"no PLAY RECAP line for {host}:\n{self.stdout[-3000:]}"
        return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))}

    def tail(self, chars: int = 6000) -> str:
        return self.stdout[-chars:] + self.stderr[-2000:]


def write_inventory(
    directory: Path,
    kube_cluster: KubeCluster,
    extra_vars: Mapping[str, Any],
    host_vars: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write the 3-node lab inventory (the hosts are never contacted by the API-side plays).

    ``host_vars`` adds variables to the cluster hosts by name (e.g. their node labels, or the
    ``ailab_gpu`` facts a host play would have gathered).
    """
    directory.mkdir(parents=True, exist_ok=True)

    def host(name: str) -> dict[str, Any]:
        return {name: {"ansible_host": "127.0.0.1", **(host_vars or {}).get(name, {})}}

    inventory = {
        "all": {
            "hosts": {
                "localhost": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
            },
            "children": {
                "cluster": {
                    "children": {
                        "server": {"hosts": host("lab-server")},
                        "agent": {"hosts": {**host("lab-cpu-1"), **host("lab-gpu-1")}},
                    }
                },
                "gpu": {"hosts": {"lab-gpu-1": {}}},
            },
            "vars": {
                "lab_kubeconfig": kube_cluster.kubeconfig,
                "lab_loadbalancer_range": LOADBALANCER_RANGE,
                "lab_credentials_dir": str(directory / "credentials"),
                "lab_artifacts_dir": str(directory / "artifacts"),
                **extra_vars,
            },
        }
    }
    path = directory / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


def run_playbook(
    kube_cluster: KubeCluster,
    playbook: str | Path,
    inventory: Path,
    *args: str,
    check: bool = True,
    timeout: float = 600,
) -> PlaybookRun:
    """Run ``ansible-playbook`` from the venv with the repository's ansible.cfg and collection link."""
    link = ROOT / ".collections" / "ansible_collections" / "ailab" / "platform"
    if not link.exists():
        pytest.fail(f"{link} is missing: run make collection")
    env = kube_cluster.env()
    env.pop("KUBECONFIG", None)  # roles must use lab_kubeconfig, nothing else
    env.update(
        {
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            # Only the checkout's link (and the bundled collections): never a stale installed copy.
            "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".collections"),
            "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "PATH": os.pathsep.join([str(kube_cluster.bin_dir), str(VENV_BIN), os.environ.get("PATH", "")]),
        }
    )
    cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(playbook), *args]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False, timeout=timeout
    )
    run = PlaybookRun(proc.returncode, proc.stdout, proc.stderr)
    if check:
        assert run.returncode == 0, f"{' '.join(cmd)} failed:\n{run.tail()}"
    return run


@pytest.fixture(scope="session")
def playbook(kube_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Call as ``playbook("playbooks/platform.yml", {inventory vars}, *args, check=True, host_vars=…)``.

    Each call writes a fresh 3-node inventory with ``lab_kubeconfig`` pointing at the control
    plane and the given variables (``host_vars={host: {...}}`` for per-host ones), and returns a
    :class:`PlaybookRun`.
    """

    def run(
        path: str,
        extra_vars: Mapping[str, Any] | None = None,
        *args: str,
        check: bool = True,
        host_vars: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> PlaybookRun:
        inventory = write_inventory(
            tmp_path_factory.mktemp("inventory"), kube_cluster, extra_vars or {}, host_vars
        )
        return run_playbook(kube_cluster, ROOT / path, inventory, *args, check=check)

    return run


@pytest.fixture(scope="session")
def kube_api(kube_cluster: KubeCluster) -> Any:
    """A kubernetes.client.ApiClient for the control plane."""
    from kubernetes import config

    return config.new_client_from_config(config_file=kube_cluster.kubeconfig)


@pytest.fixture(scope="session")
def helm(kube_cluster: KubeCluster) -> Any:
    """Call as ``helm("list", "-A", "-o", "json")``: the control plane's helm, stdout returned."""

    def run(*args: str) -> str:
        proc = subprocess.run(
            [str(kube_cluster.bin_dir / "helm"), *args],
            env=kube_cluster.env(),
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return proc.stdout

    return run


# The namespace the data services share (lab_platform_namespace).
PLATFORM_NAMESPACE = "ailab-platform"


def _namespace_phase(core: Any, name: str) -> str | None:
    from kubernetes.client.rest import ApiException

    try:
        return core.read_namespace(name).status.phase
    except ApiException as exc:
        assert exc.status == 404, exc
        return None


def _wait_namespace_gone(core: Any, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while _namespace_phase(core, name) is not None:
        assert time.monotonic() < deadline, f"namespace {name} still there {timeout:.0f} s after its deletion"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def platform_namespace(kube_api: Any) -> Iterator[str]:
    """The shared platform namespace, Active while the module's tests run.

    A module that tests one platform role alone puts the other roles' Secrets there by hand. When
    the namespace did not exist, the module made it and deletes it at its end, waiting until it is
    gone: a namespace still terminating refuses new objects (403), which would fail the next module.
    """
    from kubernetes import client

    core = client.CoreV1Api(kube_api)
    if _namespace_phase(core, PLATFORM_NAMESPACE) == "Terminating":
        _wait_namespace_gone(core, PLATFORM_NAMESPACE)
    made = _namespace_phase(core, PLATFORM_NAMESPACE) is None
    if made:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=PLATFORM_NAMESPACE)))
    yield PLATFORM_NAMESPACE
    if made:
        core.delete_namespace(PLATFORM_NAMESPACE)
        _wait_namespace_gone(core, PLATFORM_NAMESPACE)
