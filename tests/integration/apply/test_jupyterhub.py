"""The jupyterhub role through playbooks/platform.yml against the test control plane (tests/kube/).

Lifecycle: bad settings fail before anything changes; the first run installs the vendored chart
(../shared/charts/jupyterhub, as an offline lab does with ``lab_chart_dir``) with a pinned load
balancer address, GPU profiles (the fixture's ``lab-gpu-1`` has ``nvidia.com/gpu: 2``) and the
admin's Secret; a second run changes nothing; ``jupyterhub_state: absent`` removes the release and
the role's Secret but leaves the shared namespace and the S3 Secret. Applied to the test control
plane; kwok nodes run no containers: the hub and proxy pods are only marked Ready (the real hub is
tests/integration/roles/test_jupyterhub_hub.py).
"""

from __future__ import annotations

import base64
import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_objects import delete_if_present, put_secret
from kubernetes import client
from kubernetes.client.rest import ApiException
from platform_vars import platform_only

PLAYBOOK = "playbooks/platform.yml"
NAMESPACE = "ailab-platform"
# Inside the fixture's lab_loadbalancer_range (TEST-NET-2, RFC 5737): written, never contacted.
PINNED_IP = "198.51.100.248"
S3_SECRET = "s3-notebooks"  # the s3_buckets role's, made here by hand
RUNTIME_CLASS = "nvidia"  # playbooks/gpu.yml's, made here by hand


@pytest.fixture(scope="module")
def credentials_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Fixed across runs: the playbook fixture writes a new inventory (and credentials dir) per call.
    return tmp_path_factory.mktemp("jupyterhub-credentials") / "credentials"


def _vars(charts: Path, credentials: Path, **extra: Any) -> dict[str, Any]:
    return {
        "lab_chart_dir": str(charts),
        "lab_credentials_dir": str(credentials),
        **platform_only("jupyterhub"),
        "jupyterhub_loadbalancer_ip": PINNED_IP,
        "jupyterhub_wait_timeout": 120,
        "jupyterhub_address_timeout": 30,
        **extra,
    }


@pytest.fixture(scope="module")
def cluster_objects(
    kube_api: client.ApiClient, helm: Any, platform_namespace: str
) -> Iterator[client.CoreV1Api]:
    """The S3 Secret of the s3_buckets role and the RuntimeClass of playbooks/gpu.yml, by hand."""
    core = client.CoreV1Api(kube_api)
    node = client.NodeV1Api(kube_api)
    data = {
        "AWS_ACCESS_KEY_ID": "notebooks",
        "AWS_SECRET_ACCESS_KEY": "s3-secret-never-in-values",
        "AWS_ENDPOINT_URL": f"http://minio.{NAMESPACE}.svc:9000",
        "MLFLOW_S3_ENDPOINT_URL": f"http://minio.{NAMESPACE}.svc:9000",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    put_secret(core, NAMESPACE, S3_SECRET, data)
    made_runtime_class = False
    try:
        node.read_runtime_class(RUNTIME_CLASS)
    except ApiException as exc:
        assert exc.status == 404
        node.create_runtime_class(
            client.V1RuntimeClass(metadata=client.V1ObjectMeta(name=RUNTIME_CLASS), handler="nvidia")
        )
        made_runtime_class = True
    yield core
    # Leave the shared control plane as we found it.
    helm("uninstall", "jupyterhub", "--namespace", NAMESPACE, "--ignore-not-found", "--wait")
    for name in (S3_SECRET, "jupyterhub-admin"):
        delete_if_present(core.delete_namespaced_secret, name, NAMESPACE)
    if made_runtime_class:
        node.delete_runtime_class(RUNTIME_CLASS)


@pytest.fixture(scope="module")
def platform(
    cluster_objects: client.CoreV1Api, playbook: Any, shared_charts: Path, credentials_dir: Path
) -> Any:
    """Call as ``platform(check=True, **inventory_vars)``: platform.yml with the test's variables."""

    def run(check: bool = True, **extra: Any) -> Any:
        return playbook(PLAYBOOK, _vars(shared_charts, credentials_dir, **extra), check=check)

    return run


@pytest.fixture(scope="module")
def installed(platform: Any) -> Any:
    run = platform()
    assert run.recap()["changed"] > 0, run.tail()
    return run


def _releases(helm: Any) -> list[str]:
    return [r["name"] for r in json.loads(helm("list", "-n", NAMESPACE, "-o", "json"))]


@pytest.mark.parametrize(
    ("extra", "variables"),
    [
        # The role's own checks report every bad value of one run at once.
        (
            {
                "jupyterhub_loadbalancer_ip": "198.51.100.300",
                "lab_admin_user": "Lab Admin",
                "jupyterhub_auth_config": {"genericoauthenticator": {"client_id": "x"}},
                "jupyterhub_gpu_counts": [0],
            },
            (
                "jupyterhub_loadbalancer_ip",
                "jupyterhub_admin_user",
                "jupyterhub_auth_config",
                "jupyterhub_gpu_counts",
            ),
        ),
        # The argument spec's choices.
        ({"jupyterhub_authenticator": "pam"}, ("jupyterhub_authenticator",)),
        # An API check, before any change: GPU nodes but no such RuntimeClass.
        ({"jupyterhub_gpu_runtime_class": "nvidia-missing"}, ("jupyterhub_gpu_runtime_class",)),
    ],
    ids=["settings", "authenticator", "runtime-class"],
)
def test_bad_settings_fail_before_any_change(
    platform: Any, credentials_dir: Path, helm: Any, extra: dict[str, Any], variables: tuple[str, ...]
) -> None:
    # Runs before `installed`: nothing of JupyterHub exists yet, and nothing may appear.
    run = platform(check=False, **extra)
    assert run.returncode != 0
    for variable in variables:
        assert variable in run.stdout, (variable, run.tail())
    assert run.recap()["changed"] == 0
    assert "jupyterhub" not in _releases(helm)
    assert not credentials_dir.exists()


def test_install(installed: Any, kube_api: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_api)
    hub = client.AppsV1Api(kube_api).read_namespaced_deployment("jupyterhub-hub", NAMESPACE)
    assert hub.status.ready_replicas == 1
    (container,) = hub.spec.template.spec.containers
    assert container.image == "quay.io/jupyterhub/k8s-hub:4.4.0"
    refs = {
        e.name: (e.value_from.secret_key_ref.name, e.value_from.secret_key_ref.key)
        for e in container.env
        if e.value_from and e.value_from.secret_key_ref
    }
    assert refs["AILAB_ADMIN_PASSWORD"] == ("jupyterhub-admin", "password")

    service = core.read_namespaced_service("jupyterhub-proxy-public", NAMESPACE)
    assert service.spec.type == "LoadBalancer"
    assert service.metadata.annotations["metallb.io/loadBalancerIPs"] == PINNED_IP
    assert service.status.load_balancer.ingress[0].ip == PINNED_IP
    out = " ".join(installed.stdout.split())  # the YAML callback folds long messages
    assert f"JupyterHub: http://{PINNED_IP} (GPU and CPU profiles, admin admin, password in" in out
    assert f"JupyterHub | http://{PINNED_IP} | password in" in out  # the services table

    # The hub's database claim is bound (the fixture's stand-in provisioner for local-path).
    deadline = time.monotonic() + 30
    phase = None
    while time.monotonic() < deadline and phase != "Bound":
        phase = core.read_namespaced_persistent_volume_claim("jupyterhub-hub-db-dir", NAMESPACE).status.phase
        time.sleep(0.5)
    assert phase == "Bound"

    # The values the hub reads: GPU profiles (the cluster has a GPU node), S3 from the Secret.
    values = yaml.safe_load(
        base64.b64decode(core.read_namespaced_secret("jupyterhub-hub", NAMESPACE).data["values.yaml"])
    )
    slugs = [p["slug"] for p in values["singleuser"]["profileList"]]
    assert slugs == ["cpu", "gpu-1"]
    assert (
        values["singleuser"]["extraEnv"]["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"]
        == S3_SECRET
    )
    for cm in core.list_namespaced_config_map(NAMESPACE).items:
        assert "never-in-values" not in json.dumps(cm.data), cm.metadata.name
    assert "never-in-values" not in json.dumps(values)

    # Admitted under the namespace's baseline level: the pods exist and kwok runs them.
    pods = core.list_namespaced_pod(NAMESPACE, label_selector="app.kubernetes.io/instance=jupyterhub").items
    assert {p.metadata.labels["component"] for p in pods} == {"hub", "proxy"}
    assert all(p.status.phase == "Running" for p in pods)


def test_admin_password_is_private_and_never_printed(
    installed: Any, kube_api: client.ApiClient, credentials_dir: Path, helm: Any
) -> None:
    path = credentials_dir / "jupyterhub-admin-password"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    password = path.read_text().strip()
    assert len(password) == 32 and password.isalnum()
    assert password not in installed.stdout and password not in installed.stderr
    secret = client.CoreV1Api(kube_api).read_namespaced_secret("jupyterhub-admin", NAMESPACE)
    assert base64.b64decode(secret.data["password"]).decode() == password
    assert base64.b64decode(secret.data["username"]).decode() == "admin"
    assert password not in helm("get", "values", "jupyterhub", "-n", NAMESPACE, "-o", "json")


def test_second_run_changes_nothing(installed: Any, platform: Any) -> None:
    run = platform()
    assert run.recap()["changed"] == 0, run.tail()


def test_absent_removes_the_release_and_its_secret_only(
    installed: Any, platform: Any, kube_api: client.ApiClient, helm: Any
) -> None:
    run = platform(jupyterhub_state="absent")
    assert run.recap()["changed"] > 0
    assert "jupyterhub" not in _releases(helm)
    core = client.CoreV1Api(kube_api)
    names = {s.metadata.name for s in core.list_namespaced_secret(NAMESPACE).items}
    assert "jupyterhub-admin" not in names and "jupyterhub-hub" not in names
    assert S3_SECRET in names  # the s3_buckets role's Secret stays
    assert core.read_namespace(NAMESPACE).status.phase == "Active"  # shared: never deleted
    again = platform(jupyterhub_state="absent")
    assert again.recap()["changed"] == 0, again.tail()
