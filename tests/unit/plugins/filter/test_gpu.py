"""Unit tests for plugins/filter/gpu.py (the GPU layer's controller-side decisions)."""

from __future__ import annotations

from typing import Any

from ansible_collections.ailab.platform.plugins.filter import gpu

RECORD = "ailab.io/nvidia-device-plugin-labels"
H100 = {
    "present": True,
    "gpus": [{"name": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559}],
    "product": "NVIDIA-H100-80GB-HBM3",
    "memory_mib": 81559,
    "driver": {"loaded": True, "version": "550.163.01"},
}


def _node(name: str, gpus: int = 0, labels: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    capacity = {"cpu": "4", **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    return {
        "metadata": {"name": name, "labels": labels or {}, **meta},
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def test_gpu_nodes_from_facts_group_and_capacity() -> None:
    nodes = [_node("lab-server"), _node("gpu-a"), _node("lab-gpu-2", gpus=1), _node("forced")]
    hostvars = {
        "lab-server": {"ailab_gpu": {"present": False}},
        # Gathered facts win over a host variable; k3s_node_name names the node.
        "host-a": {"k3s_node_name": "gpu-a", "ansible_facts": {"ailab_gpu": H100}},
        "forced": {},
        "lab-gpu-3": {"ailab_gpu": H100},
    }
    found = gpu.gpu_nodes(nodes, ["lab-server", "host-a", "forced", "lab-gpu-3"], hostvars, ["forced"])
    by_name = {n["name"]: n for n in found["nodes"]}
    assert sorted(by_name) == ["forced", "gpu-a", "lab-gpu-2"]
    assert by_name["gpu-a"]["labels"] == {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
        "nvidia.com/gpu.memory": "81559",
    }
    assert by_name["gpu-a"]["gpu_name"] == "NVIDIA H100 80GB HBM3"
    assert by_name["gpu-a"]["driver_version"] == "550.163.01"
    assert by_name["forced"]["labels"] == {"nvidia.com/gpu.present": "true"}
    assert by_name["lab-gpu-2"]["host"] is None  # capacity only
    assert by_name["lab-gpu-2"]["smoke_job"] == "nvidia-smoke-lab-gpu-2"
    assert found["unregistered"] == ["lab-gpu-3 (node lab-gpu-3)"]


def test_gpu_capacity_counts_only_nodes_with_gpus() -> None:
    nodes = [_node("lab-server"), _node("lab-gpu-1", gpus=2), _node("lab-gpu-2", gpus=1)]
    broken = {"metadata": {"name": "odd"}, "status": {"capacity": {"nvidia.com/gpu": "n/a"}}}
    assert gpu.gpu_capacity([*nodes, broken, {}]) == {"lab-gpu-1": 2, "lab-gpu-2": 1}
    assert gpu.gpu_capacity([_node("cpu-only")]) == {}
    assert gpu.gpu_capacity(None) == {}


def test_smoke_job_names_fit_a_label_value() -> None:
    long = "gpu-" + "x" * 80
    name = gpu.smoke_job_name(long)
    assert len(name) <= 63 and name.startswith("nvidia-smoke-gpu-xx")
    assert name != gpu.smoke_job_name(long + "y")


def test_label_patch_records_only_labels_it_added_and_removal_deletes_those() -> None:
    wanted = {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "P"}
    node = _node("n", labels={"nvidia.com/gpu.present": "true"})  # k3s_node_labels gave it
    patch = gpu.gpu_label_patch(node, wanted, RECORD)
    assert patch == {"labels": wanted, "annotations": {RECORD: "nvidia.com/gpu.product"}}

    labelled = _node("n", labels=dict(wanted), annotations={RECORD: "nvidia.com/gpu.product"})
    assert gpu.gpu_label_patch(labelled, wanted, RECORD) == patch  # same patch: no change

    removal = gpu.gpu_label_patch(labelled, {}, RECORD)
    assert removal == {"labels": {"nvidia.com/gpu.product": None}, "annotations": {RECORD: None}}


def _job(name: str, settings: str, condition: str | None = None) -> dict[str, Any]:
    status = {"conditions": [{"type": condition, "status": "True"}]} if condition else {}
    return {
        "metadata": {"name": name, "uid": f"uid-{name}", "annotations": {"s": settings}},
        "status": status,
    }


def test_smoke_plan_keeps_passed_jobs_and_reruns_the_rest() -> None:
    wanted = [_job("a", "1"), _job("b", "1"), _job("c", "1"), _job("d", "1")]
    existing = [
        _job("a", "1", "Complete"),
        _job("b", "0", "Complete"),
        _job("c", "1", "Failed"),
        _job("z", "1"),
    ]
    plan = gpu.smoke_plan(wanted, existing, "s")
    assert plan["passed"] == ["a"]
    assert [j["metadata"]["name"] for j in plan["run"]] == ["b", "c", "d"]
    assert plan["delete"] == ["b", "c", "z"]  # z: its node is no GPU node any more


def test_unfinished_jobs() -> None:
    jobs = [_job("a", "1", "Complete"), _job("b", "1", "Failed"), _job("c", "1")]
    assert gpu.unfinished_jobs(jobs, ["a", "b", "c", "d"]) == ["c", "d"]


def _pod(job: str, phase: str, exit_code: int | None = None) -> dict[str, Any]:
    state = {"terminated": {"exitCode": exit_code}} if exit_code is not None else {}
    return {
        "metadata": {"name": f"{job}-x1", "uid": "uid-pod", "labels": {"job-name": job}},
        "status": {"phase": phase, "containerStatuses": [{"state": state}]},
    }


def _verdict(pod_phase: str, log: str = "", gpus: int = 1, **kwargs: Any) -> dict[str, Any]:
    gpu_node = {"name": "g", "host": "g", "gpu_name": "NVIDIA H100 80GB HBM3", "smoke_job": "nvidia-smoke-g"}
    condition = {"Succeeded": "Complete", "Failed": "Failed"}.get(pod_phase)
    observed = {
        "jobs": [_job("nvidia-smoke-g", "1", condition)],
        "pods": [_pod("nvidia-smoke-g", pod_phase, kwargs.get("exit_code"))],
        "logs": {"nvidia-smoke-g-x1": log},
        "events": [
            {"involvedObject": {"uid": "uid-pod"}, "type": "Warning", "reason": "FailedScheduling"},
            {"involvedObject": {"uid": "uid-nvidia-smoke-g"}, "type": "Normal", "reason": "SuccessfulCreate"},
            # The Job of an earlier run had the same name.
            {
                "involvedObject": {"name": "nvidia-smoke-g", "uid": "old"},
                "type": "Normal",
                "reason": "Unrelated",
            },
        ],
        "nodes": [_node("g", gpus=gpus)],
        "requested": kwargs.get("requested", 1),
    }
    (verdict,) = gpu.gpu_smoke_verdicts([gpu_node], observed)
    return verdict


def test_verdict_success_needs_nvidia_smi_output_naming_the_gpu() -> None:
    assert _verdict("Succeeded", "| NVIDIA-SMI 550 |\n| 0 NVIDIA H100 80GB HBM3 |")["ok"]
    assert "not nvidia-smi output" in _verdict("Succeeded", "hello")["cause"]
    assert "does not list NVIDIA H100 80GB HBM3" in _verdict("Succeeded", "NVIDIA-SMI\nTesla T4")["cause"]


def test_verdict_names_the_likely_cause() -> None:
    nvml = _verdict("Failed", "Failed to initialize NVML: Unknown Error", exit_code=9)
    assert not nvml["ok"] and "could not load NVML" in nvml["cause"]
    assert "Failed to initialize NVML" in nvml["report"] and "FailedScheduling" in nvml["report"]
    assert "SuccessfulCreate" in nvml["report"]
    assert "Unrelated" not in nvml["report"]
    assert "exit code 4" in _verdict("Failed", "boom", exit_code=4)["cause"]
    assert (
        "0 allocatable nvidia.com/gpu: the device plugin is not running"
        in _verdict("Pending", gpus=0)["cause"]
    )
    pending = _verdict("Pending", gpus=2, requested=3)["cause"]
    assert "no free GPU" in pending and "asks for 3 nvidia.com/gpu, the node has 2 allocatable" in pending


def test_verdict_for_a_job_kept_from_an_earlier_run() -> None:
    gpu_node = {"name": "g", "smoke_job": "nvidia-smoke-g"}
    (verdict,) = gpu.gpu_smoke_verdicts([gpu_node], {"passed": ["nvidia-smoke-g"]})
    assert verdict["ok"] and "passed earlier" in verdict["report"]
