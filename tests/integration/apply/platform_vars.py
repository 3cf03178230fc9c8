"""Inventory variables shared by the apply tests of playbooks/platform.yml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SHIPPED_GROUP_VARS = Path(__file__).resolve().parents[3] / "inventories" / "lab" / "group_vars" / "all.yml"

# The components playbooks/platform.yml installs, each behind <component>_enabled.
PLATFORM_COMPONENTS = (
    "metallb",
    "storage",
    "minio",
    "s3_buckets",
    "postgresql",
    "mlflow",
    "label_studio",
    "jupyterhub",
)


def platform_only(*components: str) -> dict[str, bool]:
    """``<component>_enabled`` for platform.yml: true for ``components``, false for the others.

    Each role's test runs its own component, so a test never depends on what another role needs
    (a reachable S3, a database) and a new component does not slow every other test down.
    """
    unknown = set(components) - set(PLATFORM_COMPONENTS)
    assert not unknown, f"not platform components: {unknown}"
    return {f"{c}_enabled": c in components for c in PLATFORM_COMPONENTS}


def shipped_lab_vars(*prefixes: str) -> dict[str, Any]:
    """The shipped lab inventory's variables whose names start with one of ``prefixes``.

    The apply tests write their own inventory (the control plane's kubeconfig, the test range);
    these bring the lab's own settings into it (bucket names, the service map, generated keys).
    """
    shipped = yaml.safe_load(SHIPPED_GROUP_VARS.read_text())
    return {k: v for k, v in shipped.items() if k.startswith(prefixes)}
