"""The controller part of playbooks/gpu.yml (role nvidia_device_plugin) against the test control plane.

Stand-ins (tests/kube/README.md): kwok simulates the nodes and runs their pods, so no GPU, driver,
container runtime or nvidia-smi is involved. The GPU nodes are kwok nodes that report
``nvidia.com/gpu`` capacity; the smoke pods' log is the nvidia-smi text below, served by kwok's
kubelet API (``kube_cluster.pod_log``) and read by the role through the API server; a pod is made
to fail by the annotation ``ailab.test/exit-code``, which kwok's pod-failed stage turns into a
Failed pod with that exit code. The scheduler, the Job controller, helm and the API are real.

The host play is limited away (``--limit localhost``): the ``ailab_gpu`` facts the host play
would gather on lab-gpu-1 are given as a host variable. lab-gpu-2 is added without labels and is
found by its ``nvidia.com/gpu`` capacity only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

PLAYBOOK = "playbooks/gpu.yml"
NAMESPACE = "nvidia-device-plugin"
GPU_NAME = "NVIDIA H100 80GB HBM3"
# What the host play's gpu_facts returns for a host with two H100 (GPU_FACTS_SCHEMA).
H100_FACTS = {
    "present": True,
    "count": 2,
    "driver": {"loaded": True, "version": "550.163.01"},
    "nvidia_smi": {"ok": True, "error": None},
    "gpus": [
        {"index": i, "name": GPU_NAME, "uuid": f"GPU-{i}", "memory_total_mib": 81559, "mig_mode": "Disabled"}
        for i in range(2)
    ],
    "product": "NVIDIA-H100-80GB-HBM3",
    "memory_mib": 81559,
}
HOST_VARS = {"lab-gpu-1": {"ailab_gpu": H100_FACTS}}
# The smoke pods' log: nvidia-smi's table as driver 550 prints it (written for the test, not
# recorded on a host).
NVIDIA_SMI = f"""\
Thu Dec  3 08:00:00 2026
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.163.01             Driver Version: 550.163.01     CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |
|=========================================+========================+======================|
|   0  {GPU_NAME}          On  |   00000000:17:00.0 Off |                    0 |
| N/A   32C    P0             71W /  700W |       1MiB /  81559MiB |      0%      Default |
+-----------------------------------------+------------------------+----------------------+
"""
# What nvidia-smi prints in a container that did not get the nvidia runtime.
NVML_MISSING = (
    "NVIDIA-SMI couldn't find libnvidia-ml.so library in your system. Please make sure that the "
    "NVIDIA Display Driver is properly installed and present in your system."
)


def _vars(charts: Path, **extra: Any) -> dict[str, Any]:
    return {
        "lab_chart_dir": str(charts),
        "nvidia_device_plugin_wait_timeout": 120,
        "nvidia_device_plugin_smoke_timeout": 60,
        **extra,
    }


@pytest.fixture(scope="module")
def gpu_run(playbook: Callable[..., Any], shared_charts: Path) -> Callable[..., Any]:
    """Run gpu.yml's controller play only, with lab-gpu-1's facts as host variables."""

    def run(*args: str, check: bool = True, **extra: Any) -> Any:
        return playbook(
            PLAYBOOK,
            _vars(shared_charts, **extra),
            "--limit",
            "localhost",
            *args,
            check=check,
            host_vars=HOST_VARS,
        )

    return run


@pytest.fixture(scope="module")
def gpu_node(kube_cluster: Any) -> Iterator[str]:
    """lab-gpu-2: a kwok node with one GPU and no labels, removed again at the end."""
    kube_cluster.add_node("lab-gpu-2", capacity={"nvidia.com/gpu": "1"})
    yield "lab-gpu-2"
    kube_cluster.remove_node("lab-gpu-2")


@pytest.fixture(scope="module")
def installed(gpu_node: str, kube_cluster: Any, gpu_run: Callable[..., Any]) -> Any:
    with kube_cluster.pod_log(NVIDIA_SMI):
        run = gpu_run()
    assert run.recap()["changed"] > 0
    return run


def _smoke_pods(api: client.ApiClient) -> list[Any]:
    return (
        client.CoreV1Api(api)
        .list_namespaced_pod(NAMESPACE, label_selector="app.kubernetes.io/name=nvidia-smoke")
        .items
    )


def _nvidia_labels(api: client.ApiClient, node: str) -> dict[str, str]:
    labels = client.CoreV1Api(api).read_node(node).metadata.labels
    return {k: v for k, v in labels.items() if k.startswith("nvidia.com/")}


def test_check_mode_changes_nothing(
    gpu_node: str, gpu_run: Callable[..., Any], kube_api: client.ApiClient, helm: Any
) -> None:
    # Runs before the install (the module's first test): the cluster has no GPU layer yet.
    run = gpu_run("--check")
    assert run.recap()["changed"] > 0  # it reports what it would do ...
    assert "nvidia-device-plugin" not in [r["name"] for r in json.loads(helm("list", "-A", "-o", "json"))]
    assert _nvidia_labels(kube_api, gpu_node) == {}  # ... and does none of it
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(kube_api).read_namespace(NAMESPACE)
    assert err.value.status == 404


def test_install_creates_the_runtime_class_the_release_and_the_labels(
    installed: Any, kube_api: client.ApiClient, helm: Any, gpu_node: str
) -> None:
    runtime_class = client.NodeV1Api(kube_api).read_runtime_class("nvidia")
    assert runtime_class.handler == "nvidia"
    assert runtime_class.scheduling.node_selector == {"nvidia.com/gpu.present": "true"}

    (release,) = json.loads(helm("list", "--namespace", NAMESPACE, "-o", "json"))
    assert release["chart"] == "nvidia-device-plugin-0.20.0"
    assert release["status"] == "deployed"

    # The node found by capacity only, and the one with facts from the host play.
    assert _nvidia_labels(kube_api, gpu_node) == {"nvidia.com/gpu.present": "true"}
    assert _nvidia_labels(kube_api, "lab-gpu-1") == {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
        "nvidia.com/gpu.memory": "81559",
    }
    assert _nvidia_labels(kube_api, "lab-cpu-1") == {}

    daemonset = client.AppsV1Api(kube_api).read_namespaced_daemon_set("nvidia-device-plugin", NAMESPACE)
    pod_spec = daemonset.spec.template.spec
    assert pod_spec.runtime_class_name == "nvidia"
    assert pod_spec.node_selector == {"nvidia.com/gpu.present": "true"}
    # kwok runs the plugin's pods: one per GPU node, none on the server or the CPU node.
    plugin_pods = (
        client.CoreV1Api(kube_api)
        .list_namespaced_pod(NAMESPACE, label_selector="app.kubernetes.io/name=nvidia-device-plugin")
        .items
    )
    assert sorted(p.spec.node_name for p in plugin_pods) == ["lab-gpu-1", gpu_node]


def test_a_smoke_job_ran_nvidia_smi_on_each_gpu_node_only(
    installed: Any, kube_api: client.ApiClient, gpu_node: str
) -> None:
    pods = _smoke_pods(kube_api)
    # The real scheduler placed each pod: on its GPU node, never on lab-cpu-1.
    assert sorted(p.spec.node_name for p in pods) == ["lab-gpu-1", gpu_node]
    for pod in pods:
        assert pod.status.phase == "Succeeded"
        assert pod.spec.runtime_class_name == "nvidia"
        assert pod.spec.containers[0].resources.limits == {"nvidia.com/gpu": "1"}
        assert pod.metadata.labels["job-name"] == f"nvidia-smoke-{pod.spec.node_name}"
    # The role read the log through the API (kwok serves it) and found the GPU of the facts.
    assert "lab-gpu-1: nvidia-smi ran and saw the GPU" in installed.stdout
    assert f"{gpu_node}: nvidia-smi ran and saw the GPU" in installed.stdout


def test_second_run_changes_nothing(
    installed: Any, gpu_run: Callable[..., Any], kube_api: client.ApiClient
) -> None:
    before = {p.metadata.name for p in _smoke_pods(kube_api)}
    run = gpu_run()
    assert run.recap()["changed"] == 0, run.tail()
    assert "passed earlier with the same settings" in run.stdout
    assert {p.metadata.name for p in _smoke_pods(kube_api)} == before  # no Job ran again


def test_runtime_class_keeps_gpu_pods_off_cpu_nodes(installed: Any, kube_api: client.ApiClient) -> None:
    # A pod that only names the RuntimeClass gets its nodeSelector (RuntimeClass admission).
    core = client.CoreV1Api(kube_api)
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="gpu-probe"),
        spec=client.V1PodSpec(
            runtime_class_name="nvidia", containers=[client.V1Container(name="c", image="busybox")]
        ),
    )
    core.create_namespaced_pod("default", pod)
    try:
        deadline = time.monotonic() + 30
        node = None
        while time.monotonic() < deadline and not node:
            node = core.read_namespaced_pod("gpu-probe", "default").spec.node_name
            time.sleep(0.5)
        assert node in ("lab-gpu-1", "lab-gpu-2"), node
    finally:
        core.delete_namespaced_pod("gpu-probe", "default", grace_period_seconds=0)


def test_a_failing_smoke_pod_fails_the_role_with_its_log_and_events(
    installed: Any, kube_cluster: Any, gpu_run: Callable[..., Any]
) -> None:
    # kwok fails the pods with exit code 9 and serves nvidia-smi's text without the nvidia runtime.
    with kube_cluster.pod_log(NVML_MISSING):
        run = gpu_run(check=False, nvidia_device_plugin_smoke_pod_annotations={"ailab.test/exit-code": "9"})
    assert run.returncode != 0
    assert "lab-gpu-2: FAILED: nvidia-smi could not load NVML" in run.stdout, run.tail()
    assert "the container ran without the NVIDIA runtime" in run.stdout
    assert "couldn't find libnvidia-ml.so library" in run.stdout  # the log, as kwok served it
    assert "BackoffLimitExceeded" in run.stdout  # the Job controller's event
    assert "Scheduled" in run.stdout  # the scheduler's event for the pod


def test_a_job_wanting_more_gpus_than_any_node_stays_pending_and_fails_the_role(
    installed: Any, gpu_run: Callable[..., Any], kube_api: client.ApiClient
) -> None:
    started = time.monotonic()
    run = gpu_run(check=False, nvidia_device_plugin_smoke_gpus=3, nvidia_device_plugin_smoke_timeout=6)
    assert run.returncode != 0
    assert time.monotonic() - started < 200  # bounded by the short timeout, not the default 300 s
    assert "Smoke Jobs not finished within nvidia_device_plugin_smoke_timeout (6 s)" in run.stdout, run.tail()
    assert "lab-gpu-1: FAILED: Pending/Unschedulable: no free GPU on lab-gpu-1" in run.stdout
    assert "asks for 3 nvidia.com/gpu, the node has 2 allocatable" in run.stdout
    assert "FailedScheduling" in run.stdout and "Insufficient nvidia.com/gpu" in run.stdout
    pods = _smoke_pods(kube_api)
    assert pods and all(p.status.phase == "Pending" and not p.spec.node_name for p in pods)


def test_removal_leaves_nothing_behind(
    installed: Any, gpu_run: Callable[..., Any], kube_api: client.ApiClient, helm: Any, gpu_node: str
) -> None:
    run = gpu_run(nvidia_device_plugin_state="absent")
    assert run.recap()["changed"] > 0

    releases = json.loads(helm("list", "--all-namespaces", "--all", "-o", "json"))
    assert "nvidia-device-plugin" not in [r["name"] for r in releases]
    for read in (
        lambda: client.CoreV1Api(kube_api).read_namespace(NAMESPACE),
        lambda: client.NodeV1Api(kube_api).read_runtime_class("nvidia"),
    ):
        with pytest.raises(ApiException) as err:
            read()
        assert err.value.status == 404
    # Labels the role set are gone; lab-gpu-1's own nvidia.com/gpu.present (registered with it) stays.
    assert _nvidia_labels(kube_api, gpu_node) == {}
    assert _nvidia_labels(kube_api, "lab-gpu-1") == {"nvidia.com/gpu.present": "true"}
    for node in (gpu_node, "lab-gpu-1"):
        annotations = client.CoreV1Api(kube_api).read_node(node).metadata.annotations or {}
        assert not [k for k in annotations if k.startswith("ailab.io/")]

    again = gpu_run(nvidia_device_plugin_state="absent")
    assert again.recap()["changed"] == 0, again.tail()
