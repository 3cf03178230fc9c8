"""The minio and s3_buckets roles through playbooks/platform.yml against the test control plane.

Two labs: one with its own MinIO (the chart from ../shared/charts/minio), one with an external
S3. The S3 server is a real moto server on 127.0.0.1 in both. For the lab's MinIO it stands in
for the MinIO pod, which cannot run on the testbed's kwok nodes: the test points the bucket step
(``s3_buckets_endpoint``) at it instead of MinIO's load balancer address.
"""

from __future__ import annotations

import base64
import contextlib
import json
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from ailab_testsupport import moto_server
from kubernetes import client
from kubernetes.client.rest import ApiException
from platform_vars import platform_only, shipped_lab_vars

PLAYBOOK = "playbooks/platform.yml"
NAMESPACE = "ailab-platform"
LB_IP = "198.51.100.243"
SERVICES = {"mlflow", "labelstudio", "yolo-server", "notebooks"}
BUCKETS = {"ailab-datasets", "ailab-mlflow", "ailab-models", "ailab-results"}
SECRET_KEYS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"}
OTHERS_OFF = platform_only("minio", "s3_buckets")


def shipped_vars() -> dict[str, Any]:
    """The S3 variables of the shipped lab inventory (bucket names, service map, generated keys)."""
    return shipped_lab_vars("lab_s3_", "lab_platform_namespace")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server; yields its URL."""
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server.endpoint


def _buckets(endpoint: str) -> set[str]:
    s3 = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    return {b["Name"] for b in s3.list_buckets()["Buckets"]}


def _secret(api: client.ApiClient, name: str) -> dict[str, str]:
    data = client.CoreV1Api(api).read_namespaced_secret(name, NAMESPACE).data
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def _releases(helm: Any) -> list[str]:
    return [r["name"] for r in json.loads(helm("list", "--all-namespaces", "--all", "-o", "json"))]


@pytest.fixture(scope="module")
def minio_vars(shared_charts: Path, s3: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    # One credentials directory for every run: the keys are generated once and then re-read.
    credentials = tmp_path_factory.mktemp("minio-lab") / "credentials"
    return {
        **shipped_vars(),
        **OTHERS_OFF,
        "lab_chart_dir": str(shared_charts),
        "lab_credentials_dir": str(credentials),
        "minio_loadbalancer_ip": LB_IP,
        "minio_wait_timeout": 120,
        # moto stands in for the MinIO pod (kwok runs no container).
        "s3_buckets_endpoint": s3,
    }


@pytest.fixture(scope="module")
def minio_installed(playbook: Callable[..., Any], minio_vars: dict[str, Any]) -> Any:
    run = playbook(PLAYBOOK, minio_vars)
    assert run.recap()["changed"] > 0
    return run


def test_lab_minio_is_one_standalone_server_on_the_pinned_address(
    minio_installed: Any, kube_api: client.ApiClient, helm: Any
) -> None:
    assert "minio" in _releases(helm)
    apps = client.AppsV1Api(kube_api)
    deployment = apps.read_namespaced_deployment("minio", NAMESPACE)
    assert deployment.spec.replicas == 1
    container = deployment.spec.template.spec.containers[0]
    assert container.image == "quay.io/minio/minio:RELEASE.2024-12-18T13-15-44Z"
    env = {e.name: e for e in container.env}
    # Root credentials from the role's Secret, never literal values.
    assert env["MINIO_ROOT_USER"].value_from.secret_key_ref.name == "minio-root"
    assert env["MINIO_ROOT_PASSWORD"].value_from.secret_key_ref.name == "minio-root"

    service = client.CoreV1Api(kube_api).read_namespaced_service("minio", NAMESPACE)
    assert service.spec.type == "LoadBalancer"
    assert [p.port for p in service.spec.ports] == [9000]
    assert service.metadata.annotations["metallb.io/loadBalancerIPs"] == LB_IP
    assert [i.ip for i in service.status.load_balancer.ingress] == [LB_IP]

    claim = client.CoreV1Api(kube_api).read_namespaced_persistent_volume_claim("minio", NAMESPACE)
    assert claim.metadata.annotations["helm.sh/resource-policy"] == "keep"


def test_each_service_has_its_own_key_limited_to_its_buckets(
    minio_installed: Any, minio_vars: dict[str, Any], kube_api: client.ApiClient, helm: Any
) -> None:
    credentials = Path(minio_vars["lab_credentials_dir"])
    for service in SERVICES:
        secret = _secret(kube_api, f"s3-{service}")
        assert secret.keys() >= SECRET_KEYS
        assert secret["AWS_ACCESS_KEY_ID"] == service
        key_file = credentials / f"s3-{service}"
        assert secret["AWS_SECRET_ACCESS_KEY"] == key_file.read_text().strip()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert secret["AWS_SECRET_ACCESS_KEY"] not in minio_installed.stdout
        assert secret["AWS_ENDPOINT_URL"] == f"http://minio.{NAMESPACE}.svc:9000"
    root = _secret(kube_api, "minio-root")
    assert root["rootUser"] == (credentials / "s3-access-key").read_text().strip()
    assert root["rootPassword"] not in minio_installed.stdout

    values = json.loads(helm("get", "values", "minio", "-n", NAMESPACE, "-o", "json"))
    users = {u["accessKey"]: u for u in values["users"]}
    assert set(users) == SERVICES
    assert users["mlflow"]["existingSecret"] == "s3-mlflow"
    assert "secretKey" not in users["mlflow"]
    policies = {p["name"]: p["statements"][0]["resources"] for p in values["policies"]}
    assert policies["ailab-mlflow"] == ["arn:aws:s3:::ailab-mlflow", "arn:aws:s3:::ailab-mlflow/*"]


def test_buckets_are_made_from_the_controller(minio_installed: Any, s3: str) -> None:
    assert _buckets(s3) >= BUCKETS


def test_second_run_changes_nothing(
    minio_installed: Any, playbook: Callable[..., Any], minio_vars: dict[str, Any]
) -> None:
    run = playbook(PLAYBOOK, minio_vars)
    assert run.recap()["changed"] == 0, run.tail()


def test_bad_loadbalancer_ip_fails_before_any_change(
    playbook: Callable[..., Any], minio_vars: dict[str, Any]
) -> None:
    run = playbook(PLAYBOOK, {**minio_vars, "minio_loadbalancer_ip": "198.51.100.999"}, check=False)
    assert run.returncode != 0
    assert 'minio_loadbalancer_ip "198.51.100.999" is not an IP address' in run.stdout, run.tail()
    assert run.recap()["changed"] == 0


def test_removal_keeps_the_data_volume(
    minio_installed: Any,
    playbook: Callable[..., Any],
    minio_vars: dict[str, Any],
    kube_api: client.ApiClient,
    helm: Any,
) -> None:
    run = playbook(PLAYBOOK, {**minio_vars, "minio_state": "absent", "s3_buckets_enabled": False})
    assert run.recap()["changed"] > 0
    assert "minio" not in _releases(helm)
    core = client.CoreV1Api(kube_api)
    for name in ["minio-root", *(f"s3-{s}" for s in SERVICES)]:
        with pytest.raises(ApiException) as err:
            core.read_namespaced_secret(name, NAMESPACE)
        assert err.value.status == 404
    assert core.read_namespaced_persistent_volume_claim("minio", NAMESPACE).metadata.name == "minio"

    run = playbook(
        PLAYBOOK,
        {**minio_vars, "minio_state": "absent", "minio_delete_data": True, "s3_buckets_enabled": False},
    )
    assert run.recap()["changed"] > 0
    with pytest.raises(ApiException) as err:
        core.read_namespaced_persistent_volume_claim("minio", NAMESPACE)
    assert err.value.status == 404


# ---------------------------------------------------------------------------------------------
# An external S3


def test_external_s3_gets_buckets_and_shared_keys_and_no_minio(
    playbook: Callable[..., Any],
    s3: str,
    kube_api: client.ApiClient,
    helm: Any,
    tmp_path: Path,
) -> None:
    lab = {
        **shipped_vars(),
        **OTHERS_OFF,
        "lab_credentials_dir": str(tmp_path / "credentials"),
        "lab_s3_endpoint": s3,
        "lab_s3_access_key": "lab-external-key",
        "lab_s3_secret_key": "lab-external-secret-0123",
        "lab_s3_bucket": "ext",
    }
    try:
        run = playbook(PLAYBOOK, lab)
        assert run.recap()["changed"] > 0
        assert "minio" not in _releases(helm)
        assert {"ext-datasets", "ext-mlflow", "ext-models", "ext-results"} <= _buckets(s3)
        secret = _secret(kube_api, "s3-labelstudio")
        assert secret["AWS_ACCESS_KEY_ID"] == "lab-external-key"
        assert secret["AWS_ENDPOINT_URL"] == s3
        assert "lab-external-secret-0123" not in run.stdout

        again = playbook(PLAYBOOK, lab)
        assert again.recap()["changed"] == 0, again.tail()
    finally:
        # The services' Secrets are the external S3's: later tests (test_mlflow.py) make their own.
        core = client.CoreV1Api(kube_api)
        for service in SERVICES:
            with contextlib.suppress(ApiException):
                core.delete_namespaced_secret(f"s3-{service}", NAMESPACE)


def test_endpoint_that_is_not_a_url_is_refused(playbook: Callable[..., Any], tmp_path: Path) -> None:
    lab = {
        **shipped_vars(),
        **OTHERS_OFF,
        "lab_credentials_dir": str(tmp_path / "credentials"),
        "lab_s3_endpoint": "minio.example.org:9000",
        "lab_s3_access_key": "k",
        "lab_s3_secret_key": "s",
    }
    run = playbook(PLAYBOOK, lab, check=False)
    assert run.returncode != 0
    assert (
        'lab_s3_endpoint (s3_buckets_endpoint) "minio.example.org:9000" is not an http(s) URL' in run.stdout
    )
    assert run.recap()["changed"] == 0
