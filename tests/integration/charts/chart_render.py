"""Render charts with the real helm, validate them for Kubernetes 1.33, and compute a role's values.

Shared by the chart tests in this directory: each renders a chart with the values its role
computes (the role's ``values.yml`` tasks run by ansible-playbook), then asserts on the objects.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
KUBE_VERSION = "1.33.0"
VENV_BIN = Path(sys.executable).parent


def helm_binary() -> str:
    """The helm v3 that `make kube-build` builds, else the one on PATH."""
    built = ROOT / "tests" / "kube" / ".build" / "bin" / "helm"
    if built.is_file():
        return str(built)
    found = shutil.which("helm")
    if found:
        return found
    pytest.fail(f"no helm: run `make kube-build` (builds {built}) or put helm v3 on PATH")


def render_chart(
    chart: Path,
    release: str,
    namespace: str,
    tmp_path: Path,
    *,
    values: dict[str, Any] | None = None,
    unvalidated: Callable[[dict[str, Any]], bool] = lambda _obj: False,
) -> list[dict[str, Any]]:
    """helm template ``chart``; return the objects, each validated strictly for 1.33.

    ``unvalidated`` picks objects kubernetes-validate has no schema for (asserted by the caller).
    """
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values or {}))
    cmd = [helm_binary(), "template", release, str(chart), "--namespace", namespace]
    cmd += ["--kube-version", KUBE_VERSION, "--values", str(path)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == 0, out.stderr
    objects = [o for o in yaml.safe_load_all(out.stdout) if o]
    for obj in objects:
        if not unvalidated(obj):
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    return objects


def role_values(
    tmp_path: Path, role: str, fact: str, extra_vars: dict[str, Any], *, inventory: Path | None = None
) -> dict[str, Any]:
    """Run ``roles/<role>/tasks/values.yml`` with the shipped lab inventory (or ``inventory``);
    return the fact ``fact``."""
    return run_values_step(tmp_path, role, fact, extra_vars, inventory=inventory)[0]


def run_values_step(
    tmp_path: Path,
    role: str,
    fact: str,
    extra_vars: dict[str, Any],
    *flags: str,
    inventory: Path | None = None,
) -> tuple[dict[str, Any], str]:
    """Run the role's values step with ansible-playbook ``flags``; return the fact and the output."""
    out_file = tmp_path / "role-values.json"
    playbook = tmp_path / "values.yml"
    playbook.write_text(
        textwrap.dedent(f"""\
        - name: Compute the {role} chart values
          hosts: localhost
          connection: local
          gather_facts: false
          tasks:
            - name: Run the role's values step
              ansible.builtin.include_role:
                name: ailab.platform.{role}
                tasks_from: values.yml
            - name: Write the values
              ansible.builtin.copy:
                content: "{{{{ {fact} | to_json }}}}"
                dest: {out_file}
                mode: "0600"
              no_log: true
        """)
    )
    link = ROOT / ".collections" / "ansible_collections" / "ailab" / "platform"
    if not link.exists():
        pytest.fail(f"{link} is missing: run `make collection`")
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
    }
    cmd = [
        str(VENV_BIN / "ansible-playbook"),
        "-i",
        str(inventory or ROOT / "inventories" / "lab"),
        str(playbook),
        "-e",
        json.dumps(extra_vars),
        *flags,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out_file.read_text()), out.stdout + out.stderr
