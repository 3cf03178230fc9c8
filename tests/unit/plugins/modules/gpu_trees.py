"""Recorded GPU hosts (fixtures/gpu/<host>.yaml) written out as the directory trees gpu_facts reads.

A recorded host is kept as YAML, not as a directory: collections may not hold file names with
":" (PCI addresses) nor binary files (EFI variables). ``write_tree`` lays out what the host
showed: sysfs PCI devices with their driver links, files (/proc, /lib/modules, ...), links, the
Secure Boot EFI variable, and recorded programs (nvidia-smi, nvidia-ctk): shell scripts that
print, for each argument line, what the real program printed there and exit with its status.

Also a command for the Molecule scenario molecule/gpu:
``python gpu_trees.py <host.yaml> <directory>``.
"""

import shlex
import sys
from pathlib import Path

import yaml

FIXTURES = Path(__file__).parent / "fixtures" / "gpu"
SECURE_BOOT_VARIABLE = "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
# The variable's 4 attribute bytes (non-volatile, boot-service and runtime access), then the value.
EFI_ATTRIBUTES = b"\x06\x00\x00\x00"


def recorded_program(name: str, answers: list) -> str:
    """A shell script that answers each recorded argument line as the real program did."""
    lines = [
        "#!/bin/sh",
        f"# Recorded {name}: prints what the real one printed on the recorded host.",
        'case "$*" in',
    ]
    for answer in answers:
        output = shlex.quote(answer.get("output", ""))
        rc = int(answer.get("rc", 0))
        lines.append(f"  {shlex.quote(answer['args'])}) printf '%s' {output}; exit {rc} ;;")
    lines += [f'  *) echo "recorded {name}: no recording for: $*" >&2; exit 2 ;;', "esac", ""]
    return "\n".join(lines)


def write_tree(spec: dict, root: Path) -> Path:
    for address, device in (spec.get("pci") or {}).items():
        directory = root / "sys/bus/pci/devices" / address
        directory.mkdir(parents=True)
        for field in ("vendor", "device", "class"):
            (directory / field).write_text(f"{device[field]}\n")
        if device.get("driver"):
            (directory / "driver").symlink_to(f"../../../../bus/pci/drivers/{device['driver']}")
    for path, content in (spec.get("files") or {}).items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(content)
    for path, target in (spec.get("links") or {}).items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).symlink_to(target)
    efi = spec.get("efi")
    if efi is not None:
        (root / "sys/firmware/efi").mkdir(parents=True)
    if isinstance(efi, dict) and "secure_boot" in efi:
        variable = root / SECURE_BOOT_VARIABLE
        variable.parent.mkdir(parents=True)
        variable.write_bytes(EFI_ATTRIBUTES + bytes([int(efi["secure_boot"])]))
    for name, answers in (spec.get("programs") or {}).items():
        program = root / "usr/bin" / name
        program.parent.mkdir(parents=True, exist_ok=True)
        program.write_text(recorded_program(name, answers))
        program.chmod(0o755)
    return root


def load(host: str) -> dict:
    return yaml.safe_load((FIXTURES / f"{host}.yaml").read_text())


def hosts() -> list:
    return sorted(path.stem for path in FIXTURES.glob("*.yaml"))


if __name__ == "__main__":
    spec_file, destination = sys.argv[1:]
    write_tree(yaml.safe_load(Path(spec_file).read_text()), Path(destination))
