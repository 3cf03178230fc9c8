"""The storage role through playbooks/platform.yml against the test control plane (tests/kube/).

The control plane starts with k3s's ``local-path`` StorageClass as the default (what k3s ships)
and binds claims of any known class with a hostPath volume (the VolumeStandIn), so a claim without
a class shows which class is the default. Lifecycle: local-path stays (or becomes) the one
default; NFS with an external server (TEST-NET-1 address, never contacted: the provisioner's pod
is a kwok pod) installs nfs-subdir-external-provisioner from the vendored chart and takes the
default from local-path; a second run changes nothing; removal; bad values fail first.

Only the controller play runs against the API. The host play (nfs-common, the export) would
contact the inventory's hosts, which are never reachable here: the NFS runs use ``--limit
localhost``, and with local-path the host play runs no task that touches a host. The host part
is molecule/storage_nfs; the chart's objects are also validated by
tests/integration/charts/test_storage_chart.py.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from platform_vars import platform_only

PLAYBOOK = "playbooks/platform.yml"
NAMESPACE = "ailab-storage"
RELEASE = "nfs-subdir-external-provisioner"
DEFAULT_KEY = "storageclass.kubernetes.io/is-default-class"
NFS_SERVER = "192.0.2.10"  # TEST-NET-1 (RFC 5737): written into the chart values, never contacted
LIMIT = ("--limit", "localhost")


def _vars(charts: Path, **extra: Any) -> dict[str, Any]:
    # Only the storage role: every other service of platform.yml off.
    return {"lab_chart_dir": str(charts), **platform_only("storage"), "storage_wait_timeout": 120, **extra}


def _nfs_vars(charts: Path, **extra: Any) -> dict[str, Any]:
    return _vars(charts, **{"lab_storage_class": "nfs-client", "storage_nfs_server": NFS_SERVER, **extra})


def _defaults(api: client.ApiClient) -> list[str]:
    classes = client.StorageV1Api(api).list_storage_class().items
    return sorted(
        c.metadata.name for c in classes if (c.metadata.annotations or {}).get(DEFAULT_KEY) == "true"
    )


def _annotation(api: client.ApiClient, name: str) -> str | None:
    return (client.StorageV1Api(api).read_storage_class(name).metadata.annotations or {}).get(DEFAULT_KEY)


def _releases(helm: Any) -> list[str]:
    return [r["name"] for r in json.loads(helm("list", "--all-namespaces", "--all", "-o", "json"))]


def _changed_anywhere(run: Any) -> int:
    section = run.stdout.rsplit("PLAY RECAP", 1)[-1]
    return sum(int(n) for n in re.findall(r"changed=(\d+)", section))


@pytest.fixture
def extra_default_class(kube_api: client.ApiClient) -> Iterator[str]:
    """A second class marked default, as another provisioner (or a k3s restart) leaves behind."""
    storage = client.StorageV1Api(kube_api)
    body = client.V1StorageClass(
        metadata=client.V1ObjectMeta(name="other-default", annotations={DEFAULT_KEY: "true"}),
        provisioner="example.com/other",
    )
    storage.create_storage_class(body)
    yield "other-default"
    storage.delete_storage_class("other-default")


def _bound_class_of_a_new_claim(api: client.ApiClient, name: str) -> str:
    """Create a claim without a class and a pod that mounts it (local-path waits for the first
    consumer), wait until the claim is bound, return its volume's class."""
    core = client.CoreV1Api(api)
    claim = client.V1PersistentVolumeClaim(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PersistentVolumeClaimSpec(
            access_modes=["ReadWriteOnce"],
            resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}),
        ),
    )
    core.create_namespaced_persistent_volume_claim("default", claim)
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            containers=[client.V1Container(name="app", image="busybox")],
            volumes=[
                client.V1Volume(
                    name="data",
                    persistent_volume_claim=client.V1PersistentVolumeClaimVolumeSource(claim_name=name),
                )
            ],
        ),
    )
    core.create_namespaced_pod("default", pod)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pvc = core.read_namespaced_persistent_volume_claim(name, "default")
            if pvc.status.phase == "Bound":
                return core.read_persistent_volume(pvc.spec.volume_name).spec.storage_class_name
            time.sleep(0.5)
        raise AssertionError(f"claim {name} not bound after 60 s: {pvc.status}")
    finally:
        core.delete_namespaced_pod(name, "default", grace_period_seconds=0)
        core.delete_namespaced_persistent_volume_claim(name, "default")


def test_local_path_becomes_the_one_default(
    playbook: Callable[..., Any], shared_charts: Path, kube_api: client.ApiClient, extra_default_class: str
) -> None:
    assert _defaults(kube_api) == ["local-path", extra_default_class]
    run = playbook(PLAYBOOK, _vars(shared_charts))
    assert run.recap()["changed"] == 1, run.tail()  # only the other class was touched
    assert _defaults(kube_api) == ["local-path"]
    assert _annotation(kube_api, extra_default_class) == "false"

    again = playbook(PLAYBOOK, _vars(shared_charts))
    assert _changed_anywhere(again) == 0, again.tail()
    assert _bound_class_of_a_new_claim(kube_api, "probe-local") == "local-path"


def test_nfs_takes_the_default_from_local_path(
    playbook: Callable[..., Any], shared_charts: Path, kube_api: client.ApiClient, helm: Any
) -> None:
    run = playbook(PLAYBOOK, _nfs_vars(shared_charts), *LIMIT)
    assert run.recap()["changed"] > 0
    assert RELEASE in _releases(helm)
    labels = client.CoreV1Api(kube_api).read_namespace(NAMESPACE).metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"

    assert _defaults(kube_api) == ["nfs-client"]
    assert _annotation(kube_api, "local-path") == "false"  # kept, no longer the default
    sc = client.StorageV1Api(kube_api).read_storage_class("nfs-client")
    assert sc.provisioner == "cluster.local/nfs-subdir-external-provisioner"
    assert sc.parameters == {"archiveOnDelete": "true"}

    deployment = client.AppsV1Api(kube_api).read_namespaced_deployment(RELEASE, NAMESPACE)
    assert deployment.status.available_replicas == 1
    env = {e.name: e.value for e in deployment.spec.template.spec.containers[0].env}
    assert env["NFS_SERVER"] == NFS_SERVER and env["NFS_PATH"] == "/srv/ailab/nfs"

    again = playbook(PLAYBOOK, _nfs_vars(shared_charts), *LIMIT)
    assert again.recap()["changed"] == 0, again.tail()
    assert _bound_class_of_a_new_claim(kube_api, "probe-nfs") == "nfs-client"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"storage_provisioner": "longhorn"}, 'storage_provisioner is "longhorn"'),
        ({"storage_nfs_server": "nfs://nas/export"}, 'storage_nfs_server is "nfs://nas/export"'),
        ({"storage_nfs_path": "srv/nfs"}, 'storage_nfs_path is "srv/nfs"'),
        ({"storage_nfs_export_clients": ["10.0.0.0/8(rw)"]}, "storage_nfs_export_clients holds"),
    ],
    ids=["provisioner", "server", "path", "clients"],
)
def test_bad_values_fail_before_any_change(
    playbook: Callable[..., Any],
    shared_charts: Path,
    kube_api: client.ApiClient,
    extra: dict[str, Any],
    message: str,
) -> None:
    # Without --limit: the host play checks first, so no host and no object changes.
    before = _defaults(kube_api)
    run = playbook(PLAYBOOK, _nfs_vars(shared_charts, **extra), check=False)
    assert run.returncode != 0
    assert " ".join(message.split()) in " ".join(run.stdout.split()), run.tail()
    assert "Nothing was changed" in run.stdout
    assert _changed_anywhere(run) == 0
    assert _defaults(kube_api) == before


def test_missing_class_names_it_and_the_fix(playbook: Callable[..., Any], shared_charts: Path) -> None:
    missing = _vars(shared_charts, lab_storage_class="fast-ssd", storage_class_wait_timeout=2)
    run = playbook(PLAYBOOK, missing, check=False)
    assert run.returncode != 0
    text = " ".join(run.stdout.split())
    expected = "StorageClass fast-ssd (storage_class, lab_storage_class by default) does not exist"
    assert expected in text, run.tail()
    assert "--disable=local-storage" in text
    assert run.recap()["changed"] == 0


def test_removal_uninstalls_nfs_and_leaves_local_path(
    playbook: Callable[..., Any], shared_charts: Path, kube_api: client.ApiClient, helm: Any
) -> None:
    run = playbook(PLAYBOOK, _nfs_vars(shared_charts, storage_state="absent"), *LIMIT)
    assert run.recap()["changed"] > 0
    assert RELEASE not in _releases(helm)
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(kube_api).read_namespace(NAMESPACE)
    assert err.value.status == 404
    names = {c.metadata.name for c in client.StorageV1Api(kube_api).list_storage_class().items}
    assert "nfs-client" not in names and "local-path" in names

    again = playbook(PLAYBOOK, _nfs_vars(shared_charts, storage_state="absent"), *LIMIT)
    assert again.recap()["changed"] == 0, again.tail()

    # Back to what k3s ships, for the tests after this module: local-path the one default.
    playbook(PLAYBOOK, _vars(shared_charts))
    assert _defaults(kube_api) == ["local-path"]
