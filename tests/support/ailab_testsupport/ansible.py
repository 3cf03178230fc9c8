"""Run a small playbook on localhost the way the project's tests do: this venv's ansible-playbook,
the checkout's ansible.cfg and its collection link (so ``ailab.platform.*`` is this checkout)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ailab_testsupport.processes import offline_env

ROOT = Path(__file__).resolve().parents[3]


def run_local_playbook(
    playbook: Path | Sequence[Mapping[str, Any]],
    directory: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run ``playbook`` (a file, or plays written to ``directory/play.yml``) on localhost.

    ``args`` go to ansible-playbook (``-e``, ``--check``); ``env`` is added to the offline
    environment. The caller asserts on the return code and the output.
    """
    if not isinstance(playbook, Path):
        path = directory / "play.yml"
        path.write_text(yaml.safe_dump(list(playbook), sort_keys=False))
        playbook = path
    environment = offline_env(
        {
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".collections"),
            "ANSIBLE_NOCOLOR": "1",
            **(env or {}),
        }
    )
    cmd = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        "localhost,",
        "-c",
        "local",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
        *args,
        str(playbook),
    ]
    return subprocess.run(
        cmd, env=environment, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
