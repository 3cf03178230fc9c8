"""Objects the apply tests of one platform role put in the API by hand, and their cleanup.

A test of one role alone makes what other roles would have made (their Secrets), and leaves the
shared control plane as it found it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException


def put_secret(core: client.CoreV1Api, namespace: str, name: str, data: dict[str, str]) -> None:
    """Create the Secret, or replace one an earlier test left with the same name."""
    secret = client.V1Secret(metadata=client.V1ObjectMeta(name=name, namespace=namespace), string_data=data)
    try:
        core.create_namespaced_secret(namespace, secret)
    except ApiException as exc:
        assert exc.status == 409, exc
        core.replace_namespaced_secret(name, namespace, secret)


def delete_if_present(delete: Callable[..., Any], *args: Any) -> None:
    """Call a ``delete_*`` method of the client; an object already gone is fine."""
    try:
        delete(*args)
    except ApiException as exc:
        if exc.status != 404:
            raise
