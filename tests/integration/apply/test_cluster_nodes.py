"""The cluster layer's API steps against the test control plane (tests/kube/).

The k3s hosts cannot run here (no kubelet), so this runs the steps of the cluster layer that talk
to the Kubernetes API, from the playbooks themselves (``--tags cluster_nodes`` selects them; the
host-side steps are skipped), so that a change to either playbook is exercised here:
- ``playbooks/cluster.yml``: the wait until every inventory node is Ready, then the inventory's
  node labels and taints applied through the API (role cluster_nodes, entry point main);
- ``playbooks/reset.yml --limit HOST``: the removal of that node (entry point remove): drain
  (cordon + evict pods) and delete the Node.
kwok plays the nodes and pods (Ready at once, evicted pods gone). The inventory's hosts run their
fact gathering on this machine (connection local, no privilege escalation), so each carries its
node name as ``k3s_node_name``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

CLUSTER = "playbooks/cluster.yml"
RESET = "playbooks/reset.yml"
STEP = ("--tags", "cluster_nodes")
# Short bounded waits: the nodes kwok plays are Ready at once.
FAST = {"cluster_nodes_ready_retries": 3, "cluster_nodes_ready_delay": 1}


def _local_host(name: str, **variables: Any) -> dict[str, Any]:
    """Host variables of an inventory host whose facts are gathered on this machine."""
    return {
        "ansible_connection": "local",
        "ansible_become": False,
        "ansible_python_interpreter": sys.executable,
        "k3s_node_name": name,
        **variables,
    }


LAB_HOSTS = {name: _local_host(name) for name in ("lab-server", "lab-cpu-1", "lab-gpu-1")}


def _extra_agent(directory: Path, name: str) -> Path:
    """A second inventory source: a new host under `agent` (the user's "add a node")."""
    path = directory / f"{name}.yml"
    path.write_text(
        yaml.safe_dump({"cluster": {"children": {"agent": {"hosts": {name: _local_host(name)}}}}})
    )
    return path


def test_every_inventory_node_ready_passes(playbook: Callable[..., Any], kube_cluster: Any) -> None:
    assert {"lab-server", "lab-cpu-1", "lab-gpu-1"} <= set(kube_cluster.nodes)
    run = playbook(CLUSTER, FAST, *STEP, host_vars=LAB_HOSTS)
    assert run.recap()["failed"] == 0
    assert "Wait until every node is Ready" in run.stdout, run.tail()
    assert "Not Ready" not in run.stdout


def test_node_that_never_joined_fails_naming_it(playbook: Callable[..., Any], tmp_path: Path) -> None:
    started = time.monotonic()
    extra = _extra_agent(tmp_path, "lab-cpu-2")
    run = playbook(CLUSTER, FAST, *STEP, "-i", str(extra), check=False, host_vars=LAB_HOSTS)
    assert run.returncode != 0
    assert "lab-cpu-2 (not registered)" in run.stdout, run.tail()
    # Only the missing node is named: the three Ready ones are not in the message.
    message = run.stdout.split("lab-cpu-2 (not registered)", 1)[0].rsplit("Not Ready after", 1)[-1]
    for ready in ("lab-server", "lab-cpu-1", "lab-gpu-1"):
        assert f"{ready} (" not in message
    # Bounded: 3 reads 1 s apart, not the default 10 minutes.
    assert time.monotonic() - started < 120


def _labels_and_taints(core: client.CoreV1Api, name: str) -> tuple[dict[str, str], set[tuple[str, str, str]]]:
    node = core.read_node(name)
    taints = {(t.key, t.value or "", t.effect) for t in node.spec.taints or []}
    return node.metadata.labels or {}, taints


@pytest.fixture
def lab_cpu_1_restored(kube_api: client.ApiClient) -> Iterator[None]:
    """Put lab-cpu-1's labels and taints back afterwards: the control plane is shared by the other
    apply tests, and a NoSchedule taint left behind would keep their DaemonSets off the node."""
    core = client.CoreV1Api(kube_api)
    before = core.read_node("lab-cpu-1")
    yield
    node = core.read_node("lab-cpu-1")
    node.metadata.labels = before.metadata.labels
    node.spec.taints = before.spec.taints
    core.replace_node("lab-cpu-1", node)


@pytest.mark.usefixtures("lab_cpu_1_restored")
def test_labels_and_taints_changed_in_the_inventory_reach_the_node(
    playbook: Callable[..., Any], kube_api: client.ApiClient
) -> None:
    core = client.CoreV1Api(kube_api)
    hosts = dict(LAB_HOSTS)

    def run_with(labels: dict[str, str], taints: list[str]) -> Any:
        hosts["lab-cpu-1"] = _local_host("lab-cpu-1", k3s_node_labels=labels, k3s_node_taints=taints)
        return playbook(CLUSTER, FAST, *STEP, host_vars=hosts)

    # The node joined without them (k3s reads node-label/node-taint only at registration);
    # then the inventory gains a label and a taint.
    first = run_with({"ailab.io/pool": "a"}, ["ailab.io/dedicated=training:NoSchedule"])
    labels, taints = _labels_and_taints(core, "lab-cpu-1")
    assert labels.get("ailab.io/pool") == "a", first.tail()
    assert ("ailab.io/dedicated", "training", "NoSchedule") in taints
    assert first.recap()["changed"] == 2  # one label patch, one taint

    # The same inventory again: nothing to change.
    again = run_with({"ailab.io/pool": "a"}, ["ailab.io/dedicated=training:NoSchedule"])
    assert again.recap()["changed"] == 0

    # Changed values reach the node; the taint is updated, not doubled.
    run_with({"ailab.io/pool": "b"}, ["ailab.io/dedicated=serving:NoSchedule"])
    labels, taints = _labels_and_taints(core, "lab-cpu-1")
    assert labels.get("ailab.io/pool") == "b"
    dedicated = [taint for taint in taints if taint[0] == "ailab.io/dedicated"]
    assert dedicated == [("ailab.io/dedicated", "serving", "NoSchedule")]
    # Other nodes are left alone.
    other_labels, other_taints = _labels_and_taints(core, "lab-server")
    assert "ailab.io/pool" not in other_labels
    assert not [t for t in other_taints if t[0] == "ailab.io/dedicated"]


def _pod_on(node: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "main", "image": "registry.invalid/pause:1"}],
            "tolerations": [{"operator": "Exists"}],
        },
    }


def _wait(what: str, predicate: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)


def test_reset_limit_drains_and_deletes_the_node(
    playbook: Callable[..., Any], kube_cluster: Any, kube_api: client.ApiClient, tmp_path: Path
) -> None:
    core = client.CoreV1Api(kube_api)
    kube_cluster.add_node("lab-old-1")
    core.create_namespaced_pod("default", _pod_on("lab-old-1", "old-workload"))
    _wait(
        "the pod on lab-old-1 to run",
        lambda: core.read_namespaced_pod("old-workload", "default").status.phase == "Running",
    )

    extra = _extra_agent(tmp_path, "lab-old-1")
    reset = (*STEP, "-i", str(extra), "--limit", "lab-old-1", "-e", "lab_reset_confirm=true")
    run = playbook(RESET, {"cluster_nodes_drain_timeout": 60}, *reset, host_vars=LAB_HOSTS)
    assert run.recap("lab-old-1")["changed"] >= 2, run.tail()  # drained, deleted

    with pytest.raises(ApiException) as missing:
        core.read_node("lab-old-1")
    assert missing.value.status == 404
    # The drain evicted the pod: it is gone, not left on a deleted node.
    _wait(
        "the evicted pod to be gone",
        lambda: (
            not [p for p in core.list_namespaced_pod("default").items if p.metadata.name == "old-workload"]
        ),
    )
    # The other nodes stay.
    names = {n.metadata.name for n in core.list_node().items}
    assert {"lab-server", "lab-cpu-1", "lab-gpu-1"} <= names

    # Removing a node that is already gone changes nothing (reset re-runs are safe).
    again = playbook(RESET, {}, *reset, host_vars=LAB_HOSTS)
    assert again.recap("lab-old-1")["changed"] == 0
    # The controller's kubeconfig stays: a --limit reset removes only the named hosts.
    assert Path(kube_cluster.kubeconfig).is_file()
