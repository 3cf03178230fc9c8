"""Inventory variables shared by the apply tests of playbooks/platform.yml."""

from __future__ import annotations

# The components playbooks/platform.yml installs, each behind <component>_enabled.
PLATFORM_COMPONENTS = ("metallb", "storage", "minio", "s3_buckets", "postgresql", "mlflow")


def platform_only(*components: str) -> dict[str, bool]:
    """``<component>_enabled`` for platform.yml: true for ``components``, false for the others.

    Each role's test runs its own component, so a test never depends on what another role needs
    (a reachable S3, a database) and a new component does not slow every other test down.
    """
    unknown = set(components) - set(PLATFORM_COMPONENTS)
    assert not unknown, f"not platform components: {unknown}"
    return {f"{c}_enabled": c in components for c in PLATFORM_COMPONENTS}
