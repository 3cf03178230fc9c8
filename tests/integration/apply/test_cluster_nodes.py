"""The cluster layer's API steps against the test control plane (tests/kube/).

The k3s hosts cannot run here (no kubelet), so this exercises the two steps of the cluster layer
that talk to the Kubernetes API, the way playbooks/cluster.yml and playbooks/reset.yml call them:
- the wait until every inventory node is Ready (role cluster_nodes, entry point main), with the
  expected names computed from the inventory by the ``cluster_node_names`` filter;
- the removal of nodes (entry point remove): drain (cordon + evict pods) and delete the Node.
kwok plays the nodes and pods (Ready at once, evicted pods gone).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

# The same expression as the last play of playbooks/cluster.yml.
EXPECTED = "{{ groups['cluster'] | ailab.platform.cluster_node_names(hostvars) }}"
ROLE = "ailab.platform.cluster_nodes"
WAIT_PLAYBOOK = [
    {
        "name": "Wait until every node is Ready",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "tasks": [
            {
                "name": "Wait for the inventory's nodes",
                "ansible.builtin.include_role": {"name": ROLE},
                "vars": {"cluster_nodes_expected": EXPECTED},
            }
        ],
    }
]

# What playbooks/reset.yml includes for the --limit hosts, run on the controller.
REMOVE_PLAYBOOK = [
    {
        "name": "Drain and delete nodes",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "tasks": [
            {
                "name": "Remove the nodes",
                "ansible.builtin.include_role": {
                    "name": "ailab.platform.cluster_nodes",
                    "tasks_from": "remove",
                },
            }
        ],
    }
]

# Short bounded waits: the nodes kwok plays are Ready at once.
FAST = {"cluster_nodes_ready_retries": 3, "cluster_nodes_ready_delay": 1}


@pytest.fixture(scope="module")
def playbooks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("cluster-nodes")
    paths = {}
    for name, content in (("wait", WAIT_PLAYBOOK), ("remove", REMOVE_PLAYBOOK)):
        paths[name] = directory / f"{name}.yml"
        paths[name].write_text(yaml.safe_dump(content, sort_keys=False))
    return paths


def test_every_inventory_node_ready_passes(
    playbook: Callable[..., Any], playbooks: dict[str, Path], kube_cluster: Any
) -> None:
    assert {"lab-server", "lab-cpu-1", "lab-gpu-1"} <= set(kube_cluster.nodes)
    run = playbook(str(playbooks["wait"]), FAST)
    assert run.recap()["failed"] == 0
    assert "Not Ready" not in run.stdout


def test_node_that_never_joined_fails_naming_it(
    playbook: Callable[..., Any], playbooks: dict[str, Path], tmp_path: Path
) -> None:
    # A second inventory source: a new host under `agent` whose node never registered.
    extra = tmp_path / "new-agent.yml"
    extra.write_text(
        yaml.safe_dump(
            {"cluster": {"children": {"agent": {"hosts": {"lab-cpu-2": {"ansible_host": "127.0.0.1"}}}}}}
        )
    )
    started = time.monotonic()
    run = playbook(str(playbooks["wait"]), FAST, "-i", str(extra), check=False)
    assert run.returncode != 0
    assert "lab-cpu-2 (not registered)" in run.stdout, run.tail()
    # Only the missing node is named: the three Ready ones are not in the message.
    message = run.stdout.split("lab-cpu-2 (not registered)", 1)[0].rsplit("Not Ready after", 1)[-1]
    for ready in ("lab-server", "lab-cpu-1", "lab-gpu-1"):
        assert f"{ready} (" not in message
    # Bounded: 3 reads 1 s apart, not the default 10 minutes.
    assert time.monotonic() - started < 120


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


def test_remove_drains_and_deletes_the_node(
    playbook: Callable[..., Any],
    playbooks: dict[str, Path],
    kube_cluster: Any,
    kube_api: client.ApiClient,
) -> None:
    core = client.CoreV1Api(kube_api)
    kube_cluster.add_node("lab-old-1")
    core.create_namespaced_pod("default", _pod_on("lab-old-1", "old-workload"))
    _wait(
        "the pod on lab-old-1 to run",
        lambda: core.read_namespaced_pod("old-workload", "default").status.phase == "Running",
    )

    run = playbook(
        str(playbooks["remove"]), {"cluster_nodes_remove": ["lab-old-1"], "cluster_nodes_drain_timeout": 60}
    )
    assert run.recap()["changed"] >= 2, run.tail()  # drained, deleted

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
    again = playbook(str(playbooks["remove"]), {"cluster_nodes_remove": ["lab-old-1"]})
    assert again.recap()["changed"] == 0
