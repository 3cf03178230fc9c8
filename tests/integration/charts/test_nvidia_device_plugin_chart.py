"""Render nvidia-device-plugin 0.20.0 (../shared/charts) with the values roles/nvidia_device_plugin computes.

Each object is validated with ``kubernetes-validate --strict`` for Kubernetes 1.33. Where the
plugin's pods may run is checked by matching the DaemonSet's nodeSelector and required node
affinity against the labels of a lab's nodes, as the scheduler does: a lab with one GPU node, a
mixed cluster (CPU and GPU nodes), and time-slicing on. Installing the chart into a real API server
is tests/integration/apply/test_gpu_apply.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_render import KUBE_VERSION, ROOT, helm_binary, render_chart, role_values

CHART = ROOT.parent / "shared" / "charts" / "nvidia-device-plugin"
NAMESPACE = "nvidia-device-plugin"
# Labels of the lab's nodes once the role labelled the GPU ones.
GPU_NODE = {
    "kubernetes.io/hostname": "lab-gpu-1",
    "nvidia.com/gpu.present": "true",
    "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
}
CPU_NODE = {"kubernetes.io/hostname": "lab-cpu-1"}
# A node node-feature-discovery found an NVIDIA PCI device on, but the role did not label (no
# driver yet): the chart's own affinity would take it, the role's nodeSelector keeps it out.
UNPREPARED_NODE = {
    "kubernetes.io/hostname": "lab-gpu-9",
    "feature.node.kubernetes.io/pci-10de.present": "true",
}


@pytest.fixture(autouse=True)
def _chart() -> None:
    if not (CHART / "Chart.yaml").is_file():
        pytest.skip(f"{CHART} is missing (the vendored chart sources beside the checkout)")


def _values(tmp_path: Path, **extra_vars: Any) -> dict[str, Any]:
    return role_values(tmp_path, "nvidia_device_plugin", "nvidia_device_plugin_chart_values", extra_vars)


def _render(tmp_path: Path, values: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    objects = render_chart(CHART, "nvidia-device-plugin", NAMESPACE, tmp_path, values=values)
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def _plugin_pod(objs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return objs[("DaemonSet", "nvidia-device-plugin")]["spec"]["template"]["spec"]


def _runs_on(pod: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether the scheduler may place ``pod`` on a node with ``labels`` (nodeSelector AND the
    required node affinity, whose terms are ORed)."""
    if any(labels.get(k) != v for k, v in (pod.get("nodeSelector") or {}).items()):
        return False
    required = (
        (pod.get("affinity") or {})
        .get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution")
    )
    if not required:
        return True

    def matches(expression: dict[str, Any]) -> bool:
        value = labels.get(expression["key"])
        operator = expression["operator"]
        if operator == "In":
            return value in expression["values"]
        if operator == "Exists":
            return value is not None
        raise AssertionError(f"operator {operator} not handled by this test")

    return any(
        all(matches(e) for e in term.get("matchExpressions", [])) for term in required["nodeSelectorTerms"]
    )


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_one_gpu_node_runs_the_plugin_with_the_nvidia_runtime(tmp_path: Path) -> None:
    values = _values(tmp_path)
    objs = _render(tmp_path, values)
    assert ("ConfigMap", "nvidia-device-plugin-configs") not in objs  # no sharing by default
    pod = _plugin_pod(objs)
    assert pod["runtimeClassName"] == "nvidia"
    (plugin,) = pod["containers"]
    assert plugin["image"] == "nvcr.io/nvidia/k8s-device-plugin:v0.20.0"  # follows the chart version
    assert _env(plugin)["MIG_STRATEGY"] == "none"
    assert _runs_on(pod, GPU_NODE)
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


def test_mixed_cluster_keeps_the_plugin_off_cpu_and_unlabelled_nodes(tmp_path: Path) -> None:
    pod = _plugin_pod(_render(tmp_path, _values(tmp_path, nvidia_device_plugin_mig_strategy="mixed")))
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert _runs_on(pod, GPU_NODE)
    assert not _runs_on(pod, CPU_NODE)
    assert not _runs_on(pod, UNPREPARED_NODE)
    assert _env(pod["containers"][0])["MIG_STRATEGY"] == "mixed"


def test_time_slicing_advertises_each_gpu_several_times(tmp_path: Path) -> None:
    values = _values(tmp_path, nvidia_device_plugin_replicas=4, nvidia_device_plugin_mig_strategy="single")
    objs = _render(tmp_path, values)
    config = yaml.safe_load(objs[("ConfigMap", "nvidia-device-plugin-configs")]["data"]["default"])
    assert config == {
        "version": "v1",
        "flags": {"migStrategy": "single"},
        "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": 4}]}},
    }
    pod = _plugin_pod(objs)
    assert pod["runtimeClassName"] == "nvidia"
    assert _runs_on(pod, GPU_NODE) and not _runs_on(pod, CPU_NODE)
    containers = {c["name"]: c for c in pod["containers"]}
    # The config manager picks "default" from the map and the plugin reads the file it writes.
    assert _env(containers["nvidia-device-plugin-sidecar"])["DEFAULT_CONFIG"] == "default"
    assert _env(containers["nvidia-device-plugin-ctr"])["CONFIG_FILE"] == "/config/config.yaml"

    values_file = str(tmp_path / "values.yaml")  # what _render gave helm template
    lint_args = ["lint", str(CHART), "--strict", "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION]
    lint = subprocess.run(
        [helm_binary(), *lint_args, "--values", values_file],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_user_values_are_merged_over_the_role_values(tmp_path: Path) -> None:
    values = _values(tmp_path, nvidia_device_plugin_values={"resources": {"limits": {"memory": "128Mi"}}})
    pod = _plugin_pod(_render(tmp_path, values))
    assert pod["containers"][0]["resources"] == {"limits": {"memory": "128Mi"}}
    assert pod["runtimeClassName"] == "nvidia"
