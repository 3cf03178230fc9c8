# Copyright: ailab maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Find NVIDIA GPUs on a host: PCI devices from sysfs (no driver needed), the loaded driver from
/proc, the GPUs as nvidia-smi reports them, Secure Boot, kernel headers and the container toolkit.

Every path is read below ``root`` so that tests and Molecule can point it at a recorded tree.
Programs (nvidia-smi, nvidia-ctk) are run through a ``run(argv) -> (rc, stdout, stderr)`` callable
that the module supplies, so this file holds no Ansible plumbing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Optional

Runner = Callable[[list], tuple]

NVIDIA_VENDOR_ID = "0x10de"
# PCI classes of GPUs: 0x0300xx VGA-compatible (GeForce, workstation boards), 0x0302xx 3D
# controller (data-centre boards). NVSwitches (0x0680xx) and HDMI audio (0x0403xx) are not GPUs.
GPU_CLASS_PREFIXES = ("0x0300", "0x0302")
PCI_DEVICES_DIR = "sys/bus/pci/devices"
DRIVER_VERSION_FILE = "proc/driver/nvidia/version"
KERNEL_RELEASE_FILE = "proc/sys/kernel/osrelease"
EFI_DIR = "sys/firmware/efi"
SECURE_BOOT_VARIABLE = "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
TOOLKIT_PROGRAMS = ("nvidia-ctk", "nvidia-container-runtime")
PROGRAM_DIRS = ("usr/bin", "usr/sbin", "usr/local/bin", "bin", "sbin")

SMI_QUERY_FIELDS = ("index", "name", "uuid", "pci.bus_id", "memory.total", "compute_cap", "mig.mode.current")
SMI_QUERY_ARGS = ["--query-gpu=" + ",".join(SMI_QUERY_FIELDS), "--format=csv,noheader,nounits"]
# What nvidia-smi prints for a field a GPU does not have (MIG mode on a GeForce, for example).
SMI_NOT_AVAILABLE = ("[N/A]", "N/A", "[Not Supported]", "")

DRIVER_VERSION_PATTERN = re.compile(r"Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)")
CUDA_VERSION_PATTERN = re.compile(r"CUDA Version:\s*(\d+\.\d+)")
TOOLKIT_VERSION_PATTERN = re.compile(r"version\s+(\d+\.\d+\.\d+\S*)")
LABEL_MAX_LENGTH = 63


def under(root: Path, path: str) -> Path:
    """``path`` (absolute or relative) inside ``root``."""
    return root / path.lstrip("/")


def read_text(path: Path) -> Optional[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def exists_in_root(root: Path, path: Path) -> bool:
    """Whether ``path`` exists, following a symbolic link with an absolute target inside
    ``root`` (a recorded tree keeps the host's absolute links, e.g. lib/modules/*/build)."""
    if path.is_symlink():
        target = os.readlink(path)  # noqa: PTH115 - Path.readlink needs Python 3.9; modules run on 3.8
        resolved = under(root, target) if target.startswith("/") else path.parent / target
        return exists_in_root(root, resolved)
    return path.exists()


def pci_devices(root: Path) -> list:
    """NVIDIA GPUs among the PCI devices of sysfs, sorted by address."""
    devices_dir = root / PCI_DEVICES_DIR
    if not devices_dir.is_dir():
        return []
    devices = []
    for entry in sorted(devices_dir.iterdir(), key=lambda path: path.name):
        vendor = (read_text(entry / "vendor") or "").lower()
        pci_class = (read_text(entry / "class") or "").lower()
        if vendor != NVIDIA_VENDOR_ID or not pci_class.startswith(GPU_CLASS_PREFIXES):
            continue
        driver_link = entry / "driver"
        # The driver link's target ends in the driver's name (../../../bus/pci/drivers/nvidia).
        driver = os.readlink(driver_link).rsplit("/", 1)[-1] if driver_link.is_symlink() else None  # noqa: PTH115
        devices.append(
            {
                "pci_address": entry.name,
                "vendor_id": vendor,
                "device_id": (read_text(entry / "device") or "").lower(),
                "class": pci_class,
                "kernel_driver": driver,
            }
        )
    return devices


def driver_version(root: Path) -> Optional[str]:
    """Version of the loaded NVIDIA kernel module (proprietary or open), None when not loaded."""
    text = read_text(root / DRIVER_VERSION_FILE)
    if text is None:
        return None
    match = DRIVER_VERSION_PATTERN.search(text)
    return match.group(1) if match else None


def secure_boot_state(root: Path) -> str:
    """``enabled``/``disabled`` from the EFI variable (4 attribute bytes, then the value);
    ``disabled`` on a BIOS boot (no EFI: no Secure Boot); ``unknown`` when EFI variables are
    not readable (efivarfs not mounted, as in containers)."""
    variable = root / SECURE_BOOT_VARIABLE
    try:
        data = variable.read_bytes()
    except OSError:
        return "unknown" if (root / EFI_DIR).is_dir() else "disabled"
    if len(data) < 5:
        return "unknown"
    return "enabled" if data[4] == 1 else "disabled"


def find_program(root: Path, program: str) -> Optional[str]:
    """Absolute path of ``program`` (a name or a path) inside ``root``, None when absent."""
    candidates = [under(root, program)] if "/" in program else [root / d / program for d in PROGRAM_DIRS]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def not_available(value: str) -> Optional[str]:
    return None if value in SMI_NOT_AVAILABLE else value


def parse_gpu_query(text: str) -> list:
    """Rows of ``nvidia-smi --query-gpu=<SMI_QUERY_FIELDS> --format=csv,noheader,nounits``."""
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        values = [value.strip() for value in line.split(",")]
        if len(values) != len(SMI_QUERY_FIELDS):
            raise ValueError(f"expected {len(SMI_QUERY_FIELDS)} fields, got {len(values)}: {line!r}")
        index, name, uuid, bus_id, memory, compute_cap, mig_mode = values
        gpus.append(
            {
                "index": int(index),
                "name": name,
                "uuid": uuid,
                "pci_bus_id": bus_id,
                "memory_total_mib": int(memory) if memory.isdigit() else None,
                "compute_capability": not_available(compute_cap),
                "mig_mode": not_available(mig_mode),
            }
        )
    return gpus


def parse_cuda_version(text: str) -> Optional[str]:
    """The driver's CUDA version from nvidia-smi's summary header."""
    match = CUDA_VERSION_PATTERN.search(text)
    return match.group(1) if match else None


def product_label(name: str) -> Optional[str]:
    """A Kubernetes label value for a GPU name, as GPU feature discovery writes
    nvidia.com/gpu.product: "NVIDIA H100 80GB HBM3" -> "NVIDIA-H100-80GB-HBM3"."""
    label = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)[:LABEL_MAX_LENGTH]
    label = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", label)
    return label or None


def first_message_line(*outputs: str) -> str:
    for output in outputs:
        for line in output.splitlines():
            if line.strip():
                return line.strip()
    return "no output"


def query_nvidia_smi(program: Optional[str], run: Runner) -> dict:
    """``{"ok", "error", "gpus", "cuda_version"}`` from two nvidia-smi runs: the query, then the
    summary (the only place that names the CUDA version)."""
    result = {"ok": False, "error": None, "gpus": [], "cuda_version": None}
    if program is None:
        result["error"] = "nvidia-smi was not found"
        return result
    rc, stdout, stderr = run([program, *SMI_QUERY_ARGS])
    if rc != 0:
        # The driver's own words, e.g. "NVIDIA-SMI has failed because it couldn't communicate
        # with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running."
        result["error"] = first_message_line(stdout, stderr)
        return result
    try:
        result["gpus"] = parse_gpu_query(stdout)
    except ValueError as exc:
        result["error"] = f"could not parse the output of nvidia-smi: {exc}"
        return result
    rc, stdout, stderr = run([program])
    if rc == 0:
        result["cuda_version"] = parse_cuda_version(stdout)
    result["ok"] = True
    return result


def container_toolkit(root: Path, run: Runner) -> dict:
    programs = [path for path in (find_program(root, name) for name in TOOLKIT_PROGRAMS) if path]
    version = None
    if programs:
        rc, stdout, _stderr = run([programs[0], "--version"])
        match = TOOLKIT_VERSION_PATTERN.search(stdout) if rc == 0 else None
        version = match.group(1) if match else None
    return {"installed": bool(programs), "version": version}


def gather(root: str, nvidia_smi: str, run: Runner, find_on_path: Callable[[str], Optional[str]]) -> dict:
    """The ``ailab_gpu`` facts (schema: the module's RETURN). ``find_on_path`` looks a program
    name up on the PATH; it is used only when ``root`` is ``/``: in a recorded tree, only
    programs inside the tree run."""
    root_path = Path(root)
    devices = pci_devices(root_path)
    version = driver_version(root_path)
    smi_program = find_program(root_path, nvidia_smi)
    if smi_program is None and root_path == Path("/"):
        smi_program = find_on_path(nvidia_smi)
    smi = query_nvidia_smi(smi_program, run)
    release = read_text(root_path / KERNEL_RELEASE_FILE)
    headers = root_path / "lib/modules" / (release or "unknown") / "build"
    first_gpu = smi["gpus"][0] if smi["gpus"] else None
    return {
        "present": bool(devices),
        "count": len(devices),
        "devices": devices,
        "driver": {"loaded": (root_path / DRIVER_VERSION_FILE).exists(), "version": version},
        "nvidia_smi": {"ok": smi["ok"], "error": smi["error"]},
        "gpus": smi["gpus"],
        "cuda_version": smi["cuda_version"],
        "product": product_label(first_gpu["name"]) if first_gpu else None,
        "memory_mib": first_gpu["memory_total_mib"] if first_gpu else None,
        "secure_boot": secure_boot_state(root_path),
        "kernel_release": release,
        "kernel_headers": bool(release) and exists_in_root(root_path, headers),
        "container_toolkit": container_toolkit(root_path, run),
    }
