"""The mlflow role through playbooks/platform.yml against the test control plane (tests/kube/).

Lifecycle: bad settings fail before anything changes; the first run installs the vendored chart
(../shared/charts/mlflow, as an offline lab does with ``lab_chart_dir``) with a pinned load
balancer address; a second run changes nothing; ``mlflow_state: absent`` removes the release and
the role's Secrets but leaves the shared namespace and the database/S3 Secrets. kwok marks the pods
(and their init containers) Ready: no MLflow process runs here (that is
tests/integration/roles/test_mlflow_server.py).
"""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kube_objects import delete_if_present, put_secret
from kubernetes import client
from platform_vars import platform_only

PLAYBOOK = "playbooks/platform.yml"
NAMESPACE = "ailab-platform"
# Inside the fixture's lab_loadbalancer_range (TEST-NET-2, RFC 5737): written, never contacted.
PINNED_IP = "198.51.100.246"
# Made by this test (see the `secrets` fixture), never by the role.
FOREIGN_SECRETS = ("postgresql-mlflow", "s3-mlflow")


@pytest.fixture(scope="module")
def credentials_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Fixed across runs: the playbook fixture writes a new inventory (and credentials dir) per call.
    return tmp_path_factory.mktemp("mlflow-credentials") / "credentials"


def _vars(charts: Path, credentials: Path, **extra: Any) -> dict[str, Any]:
    return {
        "lab_chart_dir": str(charts),
        "lab_credentials_dir": str(credentials),
        **platform_only("mlflow"),
        "mlflow_loadbalancer_ip": PINNED_IP,
        "mlflow_wait_timeout": 120,
        "mlflow_address_timeout": 30,
        **extra,
    }


@pytest.fixture(scope="module")
def secrets(kube_api: client.ApiClient, helm: Any, platform_namespace: str) -> Iterator[client.CoreV1Api]:
    """The Secrets the postgresql and minio/s3_buckets roles make, made here by hand.

    This file tests the mlflow role alone; test_platform.py runs it after the real roles.
    """
    core = client.CoreV1Api(kube_api)
    host = f"postgresql.{NAMESPACE}.svc"
    put_secret(
        core,
        NAMESPACE,
        "postgresql-mlflow",
        {
            "username": "mlflow",
            "password": "db-secret-never-in-values",
            "database": "mlflow",
            "host": host,
            "port": "5432",
            "uri": f"postgresql://mlflow:db-secret-never-in-values@{host}:5432/mlflow",
        },
    )
    put_secret(
        core,
        NAMESPACE,
        "s3-mlflow",
        {"AWS_ACCESS_KEY_ID": "mlflow-key", "AWS_SECRET_ACCESS_KEY": "s3-secret-never-in-values"},
    )
    yield core
    # Leave the shared control plane as we found it.
    helm("uninstall", "mlflow", "--namespace", NAMESPACE, "--ignore-not-found", "--wait")
    for name in (*FOREIGN_SECRETS, "mlflow-admin", "mlflow-flask-server-secret-key"):
        delete_if_present(core.delete_namespaced_secret, name, NAMESPACE)


@pytest.fixture(scope="module")
def platform(secrets: client.CoreV1Api, playbook: Any, shared_charts: Path, credentials_dir: Path) -> Any:
    """Call as ``platform(check=True, **inventory_vars)``: platform.yml with the test's variables,
    after the database and S3 Secrets exist."""

    def run(check: bool = True, **extra: Any) -> Any:
        return playbook(PLAYBOOK, _vars(shared_charts, credentials_dir, **extra), check=check)

    return run


@pytest.fixture(scope="module")
def installed(platform: Any) -> Any:
    run = platform()
    assert run.recap()["changed"] > 0
    return run


@pytest.mark.parametrize(
    ("extra", "variable"),
    [
        ({"mlflow_loadbalancer_ip": "198.51.100.300"}, "mlflow_loadbalancer_ip"),
        ({"mlflow_loadbalancer_ip": "198.51.100.240-198.51.100.241"}, "mlflow_loadbalancer_ip"),
        ({"lab_s3_endpoint": "minio:9000"}, "mlflow_s3_endpoint"),
        ({"lab_s3_bucket_mlflow": "Bad_Bucket"}, "mlflow_s3_bucket"),
        ({"mlflow_allowed_hosts_extra": ["a.example.org,b.example.org"]}, "mlflow_allowed_hosts_extra"),
        ({"mlflow_port": "http"}, "mlflow_port"),
    ],
)
def test_bad_settings_fail_before_any_change(
    platform: Any, credentials_dir: Path, helm: Any, extra: dict[str, Any], variable: str
) -> None:
    # Runs before `installed`: nothing of MLflow exists yet, and nothing may appear.
    run = platform(check=False, **extra)
    assert run.returncode != 0
    assert variable in run.stdout, run.tail()
    assert run.recap()["changed"] == 0
    assert "mlflow" not in [r["name"] for r in json.loads(helm("list", "-n", NAMESPACE, "-o", "json"))]
    assert not credentials_dir.exists()


def test_install_reads_credentials_from_secrets(installed: Any, kube_api: client.ApiClient) -> None:
    deployment = client.AppsV1Api(kube_api).read_namespaced_deployment("mlflow", NAMESPACE)
    assert deployment.status.ready_replicas == 1
    spec = deployment.spec.template.spec
    (server,) = spec.containers
    refs = {
        e.name: (e.value_from.secret_key_ref.name, e.value_from.secret_key_ref.key)
        for e in server.env
        if e.value_from and e.value_from.secret_key_ref
    }
    assert refs["PGUSER"] == ("postgresql-mlflow", "username")
    assert refs["PGPASSWORD"] == ("postgresql-mlflow", "password")
    assert refs["AWS_ACCESS_KEY_ID"] == ("s3-mlflow", "AWS_ACCESS_KEY_ID")
    assert refs["AWS_SECRET_ACCESS_KEY"] == ("s3-mlflow", "AWS_SECRET_ACCESS_KEY")
    literal = {e.name: e.value for e in server.env if e.value is not None}
    assert not {"PGPASSWORD", "PGUSER", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(literal)
    assert literal["MLFLOW_S3_ENDPOINT_URL"] == f"http://minio.{NAMESPACE}.svc:9000"
    assert "--serve-artifacts" in server.args
    assert "--artifacts-destination=s3://ailab-mlflow/" in server.args
    assert "--app-name=basic-auth" in server.args
    assert [c.name for c in spec.init_containers] == [
        "dbchecker",
        "mlflow-db-migration",
        "ini-file-initializer",
    ]

    core = client.CoreV1Api(kube_api)
    config = core.read_namespaced_config_map("mlflow-env-configmap", NAMESPACE).data
    hosts = config["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert {f"mlflow.{NAMESPACE}.svc:5000", f"{PINNED_IP}:5000", "mlflow.lab.local"} <= set(hosts)
    # No credential in any ConfigMap or in the release's values.
    for cm in core.list_namespaced_config_map(NAMESPACE).items:
        text = json.dumps(cm.data)
        assert "never-in-values" not in text, cm.metadata.name

    service = core.read_namespaced_service("mlflow", NAMESPACE)
    assert service.spec.type == "LoadBalancer"
    assert service.metadata.annotations["metallb.io/loadBalancerIPs"] == PINNED_IP
    assert service.status.load_balancer.ingress[0].ip == PINNED_IP
    assert f"MLflow: http://{PINNED_IP}:5000 (in the cluster http://mlflow.{NAMESPACE}.svc:5000" in (
        installed.stdout
    )


def test_admin_password_is_private_and_never_printed(
    installed: Any, kube_api: client.ApiClient, credentials_dir: Path, helm: Any
) -> None:
    path = credentials_dir / "mlflow-admin-password"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    password = path.read_text().strip()
    assert len(password) == 32 and password.isalnum()
    assert password not in installed.stdout and password not in installed.stderr
    secret = client.CoreV1Api(kube_api).read_namespaced_secret("mlflow-admin", NAMESPACE)
    assert base64.b64decode(secret.data["password"]).decode() == password
    assert base64.b64decode(secret.data["username"]).decode() == "admin"
    assert password not in helm("get", "values", "mlflow", "-n", NAMESPACE, "-o", "json")


def test_second_run_changes_nothing(installed: Any, platform: Any) -> None:
    run = platform()
    assert run.recap()["changed"] == 0, run.tail()


def test_absent_removes_the_release_and_its_secrets_only(
    installed: Any, platform: Any, kube_api: client.ApiClient, helm: Any
) -> None:
    run = platform(mlflow_state="absent")
    assert run.recap()["changed"] > 0
    assert "mlflow" not in [r["name"] for r in json.loads(helm("list", "-n", NAMESPACE, "-o", "json"))]
    core = client.CoreV1Api(kube_api)
    names = {s.metadata.name for s in core.list_namespaced_secret(NAMESPACE).items}
    assert not {"mlflow-admin", "mlflow-flask-server-secret-key"} & names
    assert set(FOREIGN_SECRETS) <= names  # the postgresql and s3 roles' Secrets stay
    assert core.read_namespace(NAMESPACE).status.phase == "Active"  # shared: never deleted
    again = platform(mlflow_state="absent")
    assert again.recap()["changed"] == 0, again.tail()
