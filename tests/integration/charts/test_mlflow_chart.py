"""Render the vendored mlflow chart 1.11.5 with the values the mlflow role computes.

``roles/mlflow/tasks/values.yml`` runs through ansible-playbook with the shipped lab inventory; the
chart (``../shared/charts/mlflow``) is rendered with helm and every object validated strictly for
Kubernetes 1.33. Installing it into a real API server is tests/integration/apply/test_mlflow.py;
running the rendered server is tests/integration/roles/test_mlflow_server.py.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from chart_render import render_chart, role_values

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT.parent / "shared" / "charts" / "mlflow"
NAMESPACE = "ailab-platform"
PINNED_IP = "192.168.1.245"


@pytest.fixture(scope="module", autouse=True)
def _chart() -> None:
    if not (CHART / "Chart.yaml").is_file():
        pytest.skip(f"{CHART} is missing (the vendored chart sources beside the checkout)")


def render(tmp_path: Path, extra_vars: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    values = role_values(tmp_path, "mlflow", "mlflow_chart_values", extra_vars)
    return values, render_chart(CHART, "mlflow", NAMESPACE, tmp_path, values=values)


def obj(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return obj(objects, "Deployment", "mlflow")["spec"]["template"]["spec"]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def secret_ref(name: str, key: str) -> dict[str, Any]:
    return {"secretKeyRef": {"name": name, "key": key}}


def test_single_node_lab_reads_every_credential_from_secrets(tmp_path: Path) -> None:
    values, objects = render(tmp_path, {"mlflow_loadbalancer_ip": PINNED_IP})
    spec = pod_spec(objects)
    (server,) = spec["containers"]
    env = env_of(server)
    config = obj(objects, "ConfigMap", "mlflow-env-configmap")["data"]

    # Backend store: libpq's PG* variables, host/port/db in the ConfigMap, user and password from
    # the postgresql role's Secret.
    assert "--backend-store-uri=postgresql://" in server["args"]
    assert (config["PGHOST"], config["PGPORT"], config["PGDATABASE"]) == (
        "postgresql.ailab-platform.svc",
        "5432",
        "mlflow",
    )
    assert env["PGUSER"] == secret_ref("postgresql-mlflow", "username")
    assert env["PGPASSWORD"] == secret_ref("postgresql-mlflow", "password")
    # Artifacts: proxied, in the bucket, keys from the S3 Secret, endpoint the in-cluster MinIO.
    assert "--serve-artifacts" in server["args"]
    assert "--artifacts-destination=s3://ailab-mlflow/" in server["args"]
    assert env["AWS_ACCESS_KEY_ID"] == secret_ref("s3-mlflow", "AWS_ACCESS_KEY_ID")
    assert env["AWS_SECRET_ACCESS_KEY"] == secret_ref("s3-mlflow", "AWS_SECRET_ACCESS_KEY")
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio.ailab-platform.svc:9000"
    assert env["AWS_DEFAULT_REGION"] == "us-east-1"

    # Migrations on every install/upgrade, after the connection check, with the same credentials.
    init = {c["name"]: c for c in spec["initContainers"]}
    assert list(init) == ["dbchecker", "mlflow-db-migration", "ini-file-initializer"]
    migration = init["mlflow-db-migration"]
    assert migration["image"] == server["image"] == "burakince/mlflow:3.15.1"
    assert env_of(migration)["PGPASSWORD"] == secret_ref("postgresql-mlflow", "password")

    # Basic auth: the admin from the role's Secret, the user store in PostgreSQL.
    assert "--app-name=basic-auth" in server["args"]
    ini_env = env_of(init["ini-file-initializer"])
    assert ini_env["ADMIN_USERNAME"] == secret_ref("mlflow-admin", "username")
    assert ini_env["ADMIN_PASSWORD"] == secret_ref("mlflow-admin", "password")
    assert ini_env["DB_PASSWORD"] == secret_ref("postgresql-mlflow", "password")
    ini = obj(objects, "ConfigMap", "mlflow-auth-ini-template")["data"]["auth_template.ini"]
    assert "database_uri = postgresql://$(POSTGRES_USERNAME_PLACEHOLDER):" in ini
    assert "@postgresql.ailab-platform.svc:5432/mlflow" in ini
    # The chart makes no admin Secret of its own (the role's is used).
    assert not [o for o in objects if o["metadata"]["name"] == "mlflow-auth-admin-secret"]

    hosts = config["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    for name in ("mlflow", "mlflow.ailab-platform", "mlflow.ailab-platform.svc"):
        assert name in hosts and f"{name}:5000" in hosts
    assert "mlflow.ailab-platform.svc.cluster.local:5000" in hosts
    assert f"{PINNED_IP}:5000" in hosts and "mlflow.lab.local" in hosts
    assert "*" not in hosts

    service = obj(objects, "Service", "mlflow")
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["ports"][0]["port"] == 5000
    assert service["metadata"]["annotations"] == {"metallb.io/loadBalancerIPs": PINNED_IP}

    # No credential anywhere in the values or in a rendered Secret (the chart's env Secret is
    # empty; the only generated Secret is the flask session key).
    text = json.dumps(values)
    assert "password" not in text.lower().replace('"passwordkey": "password"', "")
    env_secret = obj(objects, "Secret", "mlflow-env-secret")
    assert not env_secret.get("data")
    secrets = [o["metadata"]["name"] for o in objects if o["kind"] == "Secret"]
    assert sorted(secrets) == ["mlflow-env-secret", "mlflow-flask-server-secret-key"]


def test_external_s3_endpoint_and_database(tmp_path: Path) -> None:
    _values, objects = render(
        tmp_path,
        {
            "lab_s3_endpoint": "https://s3.example.org",
            "lab_s3_region": "eu-central-1",
            "lab_s3_bucket_mlflow": "team-mlflow",
            "postgresql_host": "db.example.org",
            "mlflow_s3_path": "lab1",
            "lab_domain": "lab.example.org",
            "mlflow_allowed_hosts_extra": ["mlflow.example.org", "*.proxy.example.org"],
        },
    )
    (server,) = pod_spec(objects)["containers"]
    env = env_of(server)
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "https://s3.example.org"
    assert env["AWS_DEFAULT_REGION"] == "eu-central-1"
    assert "--artifacts-destination=s3://team-mlflow/lab1" in server["args"]
    config = obj(objects, "ConfigMap", "mlflow-env-configmap")["data"]
    assert config["PGHOST"] == "db.example.org"
    hosts = config["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert {"mlflow.lab.example.org", "mlflow.example.org", "*.proxy.example.org"} <= set(hosts)
    # No pinned address: no annotation, and no address in the allowed hosts.
    assert not obj(objects, "Service", "mlflow")["metadata"].get("annotations")


def test_offline_lab_without_auth(tmp_path: Path) -> None:
    # An offline lab mirrors the images into its registry (mlflow_image_repository) and turns auth
    # off: no init container for the ini file, no admin anywhere.
    _values, objects = render(
        tmp_path,
        {
            "mlflow_auth_enabled": False,
            "mlflow_image_repository": "registry.lab.local:5000/burakince/mlflow",
            "mlflow_values": {"initImages": {"dbchecker": {"repository": "registry.lab.local:5000/busybox"}}},
        },
    )
    spec = pod_spec(objects)
    (server,) = spec["containers"]
    assert server["image"] == "registry.lab.local:5000/burakince/mlflow:3.15.1"
    assert [c["name"] for c in spec["initContainers"]] == ["dbchecker", "mlflow-db-migration"]
    assert spec["initContainers"][0]["image"] == "registry.lab.local:5000/busybox:1.38.0"
    assert not any(a.startswith("--app-name") for a in server["args"])
    assert "MLFLOW_AUTH_CONFIG_PATH" not in env_of(server)
    assert not [o for o in objects if "auth" in o["metadata"]["name"]]
    # Nothing secret was rendered: no Secret carries data but the generated flask key.
    for o in objects:
        if o["kind"] == "Secret" and o["metadata"]["name"] != "mlflow-flask-server-secret-key":
            assert not o.get("data"), o["metadata"]["name"]
    key = obj(objects, "Secret", "mlflow-flask-server-secret-key")["data"]
    assert len(base64.b64decode(key["MLFLOW_FLASK_SERVER_SECRET_KEY"])) == 32
