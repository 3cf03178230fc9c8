#!/usr/bin/python
# Copyright: ailab maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: gpu_facts
short_description: Find NVIDIA GPUs, their driver, Secure Boot, kernel headers and the container toolkit
description:
  - Finds NVIDIA GPUs (PCI vendor C(0x10de), class C(0x0300xx) or C(0x0302xx)) from sysfs, without
    a driver; NVSwitches, bridges and HDMI audio functions of NVIDIA boards are not GPUs.
  - When the NVIDIA kernel module is loaded, reads its version from C(/proc/driver/nvidia/version).
    When C(nvidia-smi) is installed, runs C(nvidia-smi --query-gpu=...) (name, memory, UUID, compute
    capability, MIG mode) and its summary (CUDA version); a failing C(nvidia-smi) is reported in
    C(nvidia_smi.error), not as a failure of the module.
  - Also reports the Secure Boot state (EFI variable), whether headers for the running kernel are
    installed (C(/lib/modules/<release>/build)) and whether the NVIDIA container toolkit is installed.
  - Sets the fact C(ailab_gpu). Read-only, never changed.
version_added: 0.2.0
author:
  - ailab maintainers (@ailab)
extends_documentation_fragment:
  - ailab.platform.python_interpreter
options:
  root:
    description:
      - Directory under which C(sys), C(proc), C(lib/modules) and C(usr/bin) are read, for a
        recorded tree in tests. Programs (C(nvidia-smi), C(nvidia-ctk)) run only when found under
        it; with the default V(/), O(nvidia_smi) is also looked up on the PATH.
    type: path
    default: /
  nvidia_smi:
    description: Name or path of C(nvidia-smi).
    type: str
    default: nvidia-smi
notes:
  - Supports check mode.
"""

EXAMPLES = r"""
# Ad hoc, the standard library is enough: any Python 3 on the host runs it, e.g.
#   ansible lab-gpu-1 -i inventories/lab -b -m ailab.platform.gpu_facts \
#     -e ansible_python_interpreter=/usr/bin/python3
- name: Find the NVIDIA GPUs of the host
  ailab.platform.gpu_facts:

- name: Show the GPU models and the driver version
  ansible.builtin.debug:
    msg: "{{ ailab_gpu.gpus | map(attribute='name') | list }} with driver {{ ailab_gpu.driver.version }}"
  when: ailab_gpu.present

- name: Read a recorded tree instead of the host (tests)
  ailab.platform.gpu_facts:
    root: /opt/recorded/h100-x2
"""

RETURN = r"""
ansible_facts:
  description: The facts set by the module.
  returned: always
  type: dict
  contains:
    ailab_gpu:
      description: What the host has.
      returned: always
      type: dict
      contains:
        present:
          description: At least one NVIDIA GPU is on the PCI bus.
          type: bool
          returned: always
        count:
          description: Number of NVIDIA GPUs on the PCI bus.
          type: int
          returned: always
          sample: 2
        devices:
          description: The GPUs as sysfs shows them (no driver needed), sorted by PCI address.
          type: list
          elements: dict
          returned: always
          contains:
            pci_address:
              description: PCI address.
              type: str
              sample: "0000:17:00.0"
            vendor_id:
              description: PCI vendor id, always C(0x10de).
              type: str
            device_id:
              description: PCI device id (the GPU model).
              type: str
              sample: "0x2330"
            class:
              description: PCI class, C(0x0300xx) or C(0x0302xx).
              type: str
              sample: "0x030200"
            kernel_driver:
              description: Driver bound to the device (C(nvidia), C(nouveau), C(vfio-pci)), null when none.
              type: str
        driver:
          description: The NVIDIA kernel module.
          type: dict
          returned: always
          contains:
            loaded:
              description: C(/proc/driver/nvidia/version) exists.
              type: bool
            version:
              description: Version of the loaded module, null when not loaded.
              type: str
              sample: "550.163.01"
        nvidia_smi:
          description: Whether C(nvidia-smi) ran and its output parsed.
          type: dict
          returned: always
          contains:
            ok:
              description: C(nvidia-smi) ran and parsed.
              type: bool
            error:
              description: Why not (first line of its output, or that it was not found), null when ok.
              type: str
              sample: >-
                NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure
                that the latest NVIDIA driver is installed and running.
        gpus:
          description: The GPUs as C(nvidia-smi --query-gpu) reports them; empty when it did not run.
          type: list
          elements: dict
          returned: always
          contains:
            index:
              description: nvidia-smi index.
              type: int
            name:
              description: Model name.
              type: str
              sample: NVIDIA H100 80GB HBM3
            uuid:
              description: GPU UUID.
              type: str
            pci_bus_id:
              description: PCI bus id as nvidia-smi writes it.
              type: str
              sample: "00000000:17:00.0"
            memory_total_mib:
              description: Memory in MiB.
              type: int
              sample: 81559
            compute_capability:
              description: CUDA compute capability, null when unknown.
              type: str
              sample: "9.0"
            mig_mode:
              description: C(Enabled), C(Disabled), or null where MIG does not exist (consumer GPUs).
              type: str
        cuda_version:
          description: CUDA version of the driver (nvidia-smi summary), null when unknown.
          type: str
          returned: always
          sample: "12.4"
        product:
          description: Label-safe name of the first GPU (for C(nvidia.com/gpu.product)), null without gpus.
          type: str
          returned: always
          sample: NVIDIA-H100-80GB-HBM3
        memory_mib:
          description: Memory of the first GPU in MiB (for C(nvidia.com/gpu.memory)), null without gpus.
          type: int
          returned: always
          sample: 81559
        secure_boot:
          description: C(enabled), C(disabled) (also on BIOS boots) or C(unknown) (EFI variables unreadable).
          type: str
          returned: always
        kernel_release:
          description: The running kernel (C(/proc/sys/kernel/osrelease)).
          type: str
          returned: always
          sample: 6.1.0-26-amd64
        kernel_headers:
          description: Headers for the running kernel are installed (C(/lib/modules/<release>/build)).
          type: bool
          returned: always
        container_toolkit:
          description: The NVIDIA container toolkit.
          type: dict
          returned: always
          contains:
            installed:
              description: C(nvidia-ctk) or C(nvidia-container-runtime) is installed.
              type: bool
            version:
              description: Version C(nvidia-ctk --version) reports, null when unknown.
              type: str
              sample: 1.17.8
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ailab.platform.plugins.module_utils.gpu import gather


def main():
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "path", "default": "/"},
            "nvidia_smi": {"type": "str", "default": "nvidia-smi"},
        },
        supports_check_mode=True,
    )

    def run(argv):
        # LC_ALL=C: nvidia-smi's messages are matched in English.
        return module.run_command(argv, environ_update={"LC_ALL": "C"})

    def find_on_path(name):
        return module.get_bin_path(name)

    facts = gather(module.params["root"], module.params["nvidia_smi"], run, find_on_path)
    module.exit_json(changed=False, ansible_facts={"ailab_gpu": facts})


if __name__ == "__main__":
    main()
