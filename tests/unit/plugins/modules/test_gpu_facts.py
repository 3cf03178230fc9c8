"""gpu_facts on recorded hosts (fixtures/gpu/<host>/): sysfs, /proc, EFI variables and a recorded
nvidia-smi that prints what the real one printed there. The module runs as Ansible runs it: a
child process given its arguments as JSON, so the fake nvidia-smi scripts really execute."""

import json
import os
import subprocess
import sys
from pathlib import Path

import gpu_trees
import pytest
from ansible_collections.ailab.platform.plugins.module_utils import gpu

MODULE = Path(gpu.__file__).parents[1] / "modules" / "gpu_facts.py"
BROKEN_DRIVER_MESSAGE = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running."
)


def run_module(**params):
    """Run plugins/modules/gpu_facts.py in a child Python and return its JSON answer."""
    args = json.dumps({"ANSIBLE_MODULE_ARGS": params})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    completed = subprocess.run(
        [sys.executable, str(MODULE)], input=args, capture_output=True, text=True, env=env, check=False
    )
    result = json.loads(completed.stdout)
    assert completed.returncode == 0, result
    return result


@pytest.fixture
def recorded(tmp_path):
    """Write a recorded host's tree (fixtures/gpu/<host>.yaml) and return its root."""

    def write(host):
        return gpu_trees.write_tree(gpu_trees.load(host), tmp_path / host)

    return write


def facts(root, **params):
    result = run_module(root=str(root), **params)
    assert result["changed"] is False
    return result["ansible_facts"]["ailab_gpu"]


def test_two_h100_with_an_nvswitch(recorded):
    found = facts(recorded("h100-x2"))
    assert found["present"] is True
    # The NVSwitch (class 0x068000) and the BMC's ASPEED VGA (vendor 0x1a03) are not counted.
    assert found["count"] == 2
    assert found["devices"] == [
        {
            "pci_address": "0000:17:00.0",
            "vendor_id": "0x10de",
            "device_id": "0x2330",
            "class": "0x030200",
            "kernel_driver": "nvidia",
        },
        {
            "pci_address": "0000:3d:00.0",
            "vendor_id": "0x10de",
            "device_id": "0x2330",
            "class": "0x030200",
            "kernel_driver": "nvidia",
        },
    ]
    assert found["driver"] == {"loaded": True, "version": "550.163.01"}
    assert found["nvidia_smi"] == {"ok": True, "error": None}
    assert found["gpus"][1] == {
        "index": 1,
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": "GPU-a8d41c27-3e95-4f06-b2c7-9d1e6f0a4b58",
        "pci_bus_id": "00000000:3D:00.0",
        "memory_total_mib": 81559,
        "compute_capability": "9.0",
        "mig_mode": "Disabled",
    }
    assert found["cuda_version"] == "12.4"
    assert found["product"] == "NVIDIA-H100-80GB-HBM3"
    assert found["memory_mib"] == 81559
    assert found["secure_boot"] == "disabled"
    assert found["kernel_release"] == "6.1.0-26-amd64"
    assert found["kernel_headers"] is True
    assert found["container_toolkit"] == {"installed": True, "version": "1.17.8"}


def test_a100_in_mig_mode_with_the_open_kernel_module_and_secure_boot(recorded):
    found = facts(recorded("a100-mig"))
    assert found["count"] == 1
    assert found["driver"]["version"] == "535.183.01"
    assert found["gpus"][0]["mig_mode"] == "Enabled"
    assert found["gpus"][0]["compute_capability"] == "8.0"
    assert found["cuda_version"] == "12.2"
    assert found["product"] == "NVIDIA-A100-SXM4-40GB"
    assert found["memory_mib"] == 40960
    assert found["secure_boot"] == "enabled"
    assert found["container_toolkit"] == {"installed": False, "version": None}


def test_l4_on_ubuntu_24_04(recorded):
    found = facts(recorded("l4"))
    assert [d["device_id"] for d in found["devices"]] == ["0x27b8"]
    assert found["driver"]["version"] == "550.127.05"
    assert (found["product"], found["memory_mib"]) == ("NVIDIA-L4", 23034)
    assert found["gpus"][0]["compute_capability"] == "8.9"
    assert found["kernel_release"] == "6.8.0-45-generic"


@pytest.mark.parametrize(
    ("host", "device_id", "product", "memory"),
    [
        ("rtx4090", "0x2684", "NVIDIA-GeForce-RTX-4090", 24564),
        ("rtx3060", "0x2504", "NVIDIA-GeForce-RTX-3060", 12288),
    ],
)
def test_consumer_gpus_have_no_mig_and_their_audio_function_does_not_count(
    host, device_id, product, memory, recorded
):
    found = facts(recorded(host))
    assert found["count"] == 1
    assert found["devices"][0]["device_id"] == device_id
    assert found["devices"][0]["class"] == "0x030000"
    assert found["gpus"][0]["mig_mode"] is None
    assert (found["product"], found["memory_mib"]) == (product, memory)
    assert found["cuda_version"] == "12.2"


def test_intel_graphics_beside_a_geforce_do_not_count(recorded):
    found = facts(recorded("rtx3060"))
    assert [d["pci_address"] for d in found["devices"]] == ["0000:01:00.0"]


def test_gpu_bound_to_nouveau_without_driver_nor_headers(recorded):
    found = facts(recorded("nouveau"))
    assert found["present"] is True
    assert found["devices"][0]["kernel_driver"] == "nouveau"
    assert found["driver"] == {"loaded": False, "version": None}
    assert found["nvidia_smi"] == {"ok": False, "error": "nvidia-smi was not found"}
    assert found["gpus"] == []
    assert (found["product"], found["memory_mib"], found["cuda_version"]) == (None, None, None)
    assert found["kernel_headers"] is False
    # No EFI directory: a BIOS boot, where Secure Boot does not exist.
    assert found["secure_boot"] == "disabled"


def test_broken_driver_reports_nvidia_smi_failure_without_failing(recorded):
    found = facts(recorded("broken-driver"))
    assert found["present"] is True
    assert found["devices"][0]["kernel_driver"] is None
    assert found["driver"]["loaded"] is False
    assert found["nvidia_smi"] == {"ok": False, "error": BROKEN_DRIVER_MESSAGE}
    assert found["gpus"] == []
    assert found["secure_boot"] == "enabled"


def test_no_nvidia_gpu_only_other_graphics_and_an_nvswitch(recorded):
    found = facts(recorded("no-nvidia"))
    assert found["present"] is False
    assert found["count"] == 0
    assert found["devices"] == []
    # EFI boot whose variables cannot be read (efivarfs not mounted).
    assert found["secure_boot"] == "unknown"
    assert found["kernel_headers"] is True


def test_nvidia_smi_outside_the_recorded_tree_is_not_run(recorded):
    # The name is looked up under the tree only: the host's PATH must not leak into a recorded tree.
    found = facts(recorded("nouveau"), nvidia_smi="sh")
    assert found["nvidia_smi"]["error"] == "nvidia-smi was not found"


def test_nvidia_smi_given_as_a_path_inside_the_tree(recorded):
    tree = recorded("l4")
    (tree / "opt" / "nvidia").mkdir(parents=True)
    (tree / "usr" / "bin" / "nvidia-smi").rename(tree / "opt" / "nvidia" / "nvidia-smi")
    assert facts(tree)["nvidia_smi"]["ok"] is False
    found = facts(tree, nvidia_smi="/opt/nvidia/nvidia-smi")
    assert found["nvidia_smi"]["ok"] is True
    assert found["gpus"][0]["name"] == "NVIDIA L4"


def test_every_recorded_host_is_read_without_failing(recorded):
    for host in gpu_trees.hosts():
        found = facts(recorded(host))
        assert found["count"] == len(found["devices"]), host
        assert found["nvidia_smi"]["ok"] == bool(found["gpus"]), host


def test_check_mode_reads_the_same_facts(recorded):
    result = run_module(root=str(recorded("h100-x2")), _ansible_check_mode=True)
    assert result["changed"] is False
    assert result["ansible_facts"]["ailab_gpu"]["count"] == 2


def test_unparsable_query_output_is_an_error_not_a_crash():
    def run(argv):
        return 0, "0, NVIDIA H100 80GB HBM3\n", ""

    result = gpu.query_nvidia_smi("/usr/bin/nvidia-smi", run)
    assert result["ok"] is False
    assert result["error"].startswith("could not parse the output of nvidia-smi: expected 7 fields, got 2")


def test_query_asks_for_the_fields_the_parser_reads():
    calls = []

    def run(argv):
        calls.append(argv)
        return 0, "", ""

    gpu.query_nvidia_smi("/usr/bin/nvidia-smi", run)
    assert calls[0] == [
        "/usr/bin/nvidia-smi",
        "--query-gpu=index,name,uuid,pci.bus_id,memory.total,compute_cap,mig.mode.current",
        "--format=csv,noheader,nounits",
    ]


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("NVIDIA H100 80GB HBM3", "NVIDIA-H100-80GB-HBM3"),
        ("NVIDIA RTX 6000 Ada Generation", "NVIDIA-RTX-6000-Ada-Generation"),
        ("Tesla T4 (rev a1)", "Tesla-T4-rev-a1"),
        ("NVIDIA A100-SXM4-80GB/" + "x" * 80, ("NVIDIA-A100-SXM4-80GB-" + "x" * 80)[:63]),
        ("???", None),
    ],
)
def test_product_label_is_a_valid_label_value(name, label):
    assert gpu.product_label(name) == label


def test_driver_versions_of_both_kernel_module_flavours(tmp_path):
    version_file = tmp_path / "proc" / "driver" / "nvidia" / "version"
    version_file.parent.mkdir(parents=True)
    version_file.write_text(
        "NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  570.86.15  Release Build\n"
    )
    assert gpu.driver_version(tmp_path) == "570.86.15"
    version_file.write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  470.256.02  Thu May  2 14:37:44 UTC 2024\n"
    )
    assert gpu.driver_version(tmp_path) == "470.256.02"


def test_headers_link_that_points_nowhere_means_no_headers(tmp_path):
    (tmp_path / "proc" / "sys" / "kernel").mkdir(parents=True)
    (tmp_path / "proc" / "sys" / "kernel" / "osrelease").write_text("6.1.0-99-amd64\n")
    modules = tmp_path / "lib" / "modules" / "6.1.0-99-amd64"
    modules.mkdir(parents=True)
    # The headers package was removed but the kernel package's link stayed.
    (modules / "build").symlink_to("/usr/src/linux-headers-6.1.0-99-amd64")
    found = gpu.gather(str(tmp_path), "nvidia-smi", lambda argv: (1, "", ""), lambda name: None)
    assert found["kernel_headers"] is False
