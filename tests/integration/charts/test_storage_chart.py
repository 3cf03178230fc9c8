"""Render nfs-subdir-external-provisioner 4.0.18 (../shared/charts) with the values roles/storage computes.

Each object is validated with ``kubernetes-validate --strict`` for Kubernetes 1.33. Three labs: the
single-node CPU lab as shipped (``inventories/lab``: local-path, so no chart at all), the 3-node
example (``inventories/multinode``: ``lab_storage_class: nfs-client``, the export on the first
server, whose ``ansible_host`` becomes ``nfs.server``) and an offline lab (``lab_chart_dir`` set,
an external NFS server). Installing the chart into a real API server is
tests/integration/apply/test_storage.py; the export itself is molecule/storage_nfs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from chart_render import ROOT, render_chart, role_values

CHARTS = ROOT.parent / "shared" / "charts"
CHART = CHARTS / "nfs-subdir-external-provisioner"
NAMESPACE = "ailab-storage"
RELEASE = "nfs-subdir-external-provisioner"
DEFAULT_KEY = "storageclass.kubernetes.io/is-default-class"


@pytest.fixture(autouse=True)
def _chart() -> None:
    if not (CHART / "Chart.yaml").is_file():
        pytest.skip(f"{CHART} is missing (the vendored chart sources beside the checkout)")


def _values(tmp_path: Path, inventory: str = "lab", **extra_vars: Any) -> dict[str, Any]:
    return role_values(
        tmp_path, "storage", "storage_chart_values", extra_vars, inventory=ROOT / "inventories" / inventory
    )


def _render(tmp_path: Path, values: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    objects = render_chart(CHART, RELEASE, NAMESPACE, tmp_path, values=values)
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def _default_classes(objs: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    return [
        name
        for (kind, name), obj in objs.items()
        if kind == "StorageClass" and (obj["metadata"].get("annotations") or {}).get(DEFAULT_KEY) == "true"
    ]


def _provisioner(objs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return objs[("Deployment", RELEASE)]["spec"]["template"]["spec"]


def test_single_node_cpu_lab_installs_no_chart(tmp_path: Path) -> None:
    # inventories/lab: lab_storage_class local-path, k3s: the class k3s ships is the default.
    assert _values(tmp_path) == {}
    assert _values(tmp_path, lab_distribution="microk8s", lab_storage_class="microk8s-hostpath") == {}


def test_three_node_lab_exports_from_the_first_server(tmp_path: Path) -> None:
    values = _values(tmp_path, "multinode")
    assert values["nfs"] == {"server": "192.168.1.10", "path": "/srv/ailab/nfs", "reclaimPolicy": "Retain"}
    objs = _render(tmp_path, values)
    assert _default_classes(objs) == ["nfs-client"]
    sc = objs[("StorageClass", "nfs-client")]
    assert sc["reclaimPolicy"] == "Delete"
    assert sc["parameters"] == {"archiveOnDelete": "true"}
    assert sc["provisioner"] == "cluster.local/nfs-subdir-external-provisioner"

    pod = _provisioner(objs)
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["NFS_SERVER"] == "192.168.1.10"
    assert env["NFS_PATH"] == "/srv/ailab/nfs"
    assert env["PROVISIONER_NAME"] == sc["provisioner"]
    # The pod mounts the export itself (the baseline Pod Security level admits an nfs volume).
    (volume,) = pod["volumes"]
    assert volume["nfs"] == {"server": "192.168.1.10", "path": "/srv/ailab/nfs"}
    assert container["resources"]["limits"] == {"memory": "128Mi"}


def test_offline_lab_with_an_external_server(tmp_path: Path) -> None:
    values = _values(
        tmp_path,
        "multinode",
        lab_chart_dir=str(CHARTS),
        storage_nfs_server="nas.lab.example.org",
        storage_nfs_path="/volume1/ailab",
        storage_nfs_archive_on_delete=False,
        storage_values={"nodeSelector": {"kubernetes.io/os": "linux"}},
    )
    objs = _render(tmp_path, values)
    assert _default_classes(objs) == ["nfs-client"]
    assert objs[("StorageClass", "nfs-client")]["parameters"] == {"archiveOnDelete": "false"}
    pod = _provisioner(objs)
    assert pod["volumes"][0]["nfs"] == {"server": "nas.lab.example.org", "path": "/volume1/ailab"}
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
