"""Render the vendored label-studio chart 2.0.5 with the values the label_studio role computes.

``roles/label_studio/tasks/values.yml`` runs through ansible-playbook with the shipped lab
inventory; the chart (``../shared/charts/label-studio``) is rendered with helm and every object
validated strictly for Kubernetes 1.33. Installing it into a real API server is
tests/integration/apply/test_label_studio.py; running the rendered configuration is
tests/integration/roles/test_label_studio_server.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from chart_render import render_chart, role_values

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT.parent / "shared" / "charts" / "label-studio"
NAMESPACE = "ailab-platform"
PINNED_IP = "192.168.1.242"
# What never belongs in chart values: a password, a token, an S3 key (the role's Secrets hold them).
FORBIDDEN_IN_VALUES = ("Passw0rd-never-in-values", "Tok3n-never-in-values-0123456789")


@pytest.fixture(scope="module", autouse=True)
def _chart() -> None:
    if not (CHART / "Chart.yaml").is_file():
        pytest.skip(f"{CHART} is missing (the vendored chart sources beside the checkout)")


def render(tmp_path: Path, extra_vars: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    values = role_values(tmp_path, "label_studio", "label_studio_chart_values", extra_vars)
    return values, render_chart(CHART, "label-studio", NAMESPACE, tmp_path, values=values)


def obj(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    names = [e["name"] for e in container.get("env", [])]
    assert len(names) == len(set(names)), f"duplicate env in {container['name']}: {names}"
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def secret_ref(name: str, key: str) -> dict[str, Any]:
    return {"secretKeyRef": {"name": name, "key": key}}


def test_lab_default_reads_every_credential_from_secrets(tmp_path: Path) -> None:
    values, objects = render(
        tmp_path,
        {
            "label_studio_loadbalancer_ip": PINNED_IP,
            # Given in the inventory: they go into the role's Secret, never into the values.
            "label_studio_admin_password": FORBIDDEN_IN_VALUES[0],
            "label_studio_admin_token": FORBIDDEN_IN_VALUES[1],
        },
    )
    # Only the role's chart: the bundled Bitnami PostgreSQL (and Redis) are off.
    assert values["postgresql"]["enabled"] is False
    assert not [o for o in objects if "postgresql" in o["metadata"]["name"] or o["kind"] == "StatefulSet"]
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects)
    assert kinds == [
        ("Deployment", "label-studio"),
        ("PersistentVolumeClaim", "label-studio-ls-pvc"),
        ("Secret", "label-studio-django-secret"),
        ("Secret", "label-studio-ls-secrets"),
        ("Service", "label-studio"),
        ("ServiceAccount", "label-studio"),
    ]

    deployment = obj(objects, "Deployment", "label-studio")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # one pod on a RWO claim
    spec = deployment["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    containers = {c["name"]: c for c in spec["containers"]}
    assert list(containers) == ["app", "nginx"]
    (migrate,) = spec["initContainers"]
    app = env_of(containers["app"])
    url = f"http://{PINNED_IP}"  # port 80: browsers send the Origin without it
    # The URL users open, and the settings that make the admin and its token.
    assert app["LABEL_STUDIO_HOST"] == url and app["CSRF_TRUSTED_ORIGINS"] == url
    assert app["DISABLE_SIGNUP_WITHOUT_LINK"] == "true"
    assert app["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    for key in ("LABEL_STUDIO_USERNAME", "LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_USER_TOKEN"):
        assert app[key] == secret_ref("label-studio-admin", key)
    # The database: the lab's PostgreSQL, its password from the postgresql role's Secret.
    for env in (app, env_of(migrate)):
        assert env["DJANGO_DB"] == "default"
        assert (env["POSTGRE_HOST"], env["POSTGRE_PORT"]) == (f"postgresql.{NAMESPACE}.svc", "5432")
        assert (env["POSTGRE_NAME"], env["POSTGRE_USER"]) == ("labelstudio", "labelstudio")
        assert env["POSTGRE_PASSWORD"] == secret_ref("postgresql-labelstudio", "password")
        assert env["SECRET_KEY"] == secret_ref("label-studio-django-secret", "key")
    assert migrate["args"] == ["label-studio-migrate"]
    # S3: the keys of the lab's labelstudio user, the endpoint as Label Studio's trusted fallback.
    assert app["AWS_ACCESS_KEY_ID"] == secret_ref("s3-labelstudio", "AWS_ACCESS_KEY_ID")
    assert app["AWS_SECRET_ACCESS_KEY"] == secret_ref("s3-labelstudio", "AWS_SECRET_ACCESS_KEY")
    assert app["S3_ENDPOINT"] == f"http://minio.{NAMESPACE}.svc:9000"  # no minio_url without the minio role
    assert app["AWS_DEFAULT_REGION"] == "us-east-1"
    # The admin's and S3 credentials reach the app container only, not nginx or the migration.
    for other in (env_of(containers["nginx"]), env_of(migrate)):
        assert not {"LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_USER_TOKEN", "AWS_SECRET_ACCESS_KEY"} & set(other)
    for container in (*containers.values(), migrate):
        assert container["image"] == "docker.io/heartexlabs/label-studio:1.23.0"
        # Within the restricted Pod Security level (the namespace warns about it).
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True and security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert containers["app"]["resources"]["requests"] == {"cpu": "250m", "memory": "768Mi"}

    service = obj(objects, "Service", "label-studio")
    assert service["spec"]["type"] == "LoadBalancer"
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(80, 8085)]
    assert service["metadata"]["annotations"] == {"metallb.io/loadBalancerIPs": PINNED_IP}

    claim = obj(objects, "PersistentVolumeClaim", "label-studio-ls-pvc")
    assert claim["spec"]["storageClassName"] == "local-path"
    assert claim["spec"]["resources"]["requests"] == {"storage": "10Gi"}
    assert claim["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "label-studio-ls-pvc"}} in spec["volumes"]

    # No credential in the values or in a Secret the chart renders (but its own Django key).
    text = json.dumps(values)
    for secret in FORBIDDEN_IN_VALUES:
        assert secret not in text
    assert not obj(objects, "Secret", "label-studio-ls-secrets").get("data")


def test_host_behind_a_proxy_and_external_services(tmp_path: Path) -> None:
    # No pinned address: LABEL_STUDIO_HOST is the proxy's URL, the annotation is absent, and the
    # S3 and database settings follow the lab's external services.
    _values, objects = render(
        tmp_path,
        {
            "label_studio_host": "https://label.example.org/",
            "lab_s3_endpoint": "https://s3.example.org",
            "lab_s3_region": "eu-central-1",
            "postgresql_host": "db.example.org",
            "lab_admin_email": "ops@example.org",
            "label_studio_port": 8080,
        },
    )
    spec = obj(objects, "Deployment", "label-studio")["spec"]["template"]["spec"]
    app = env_of(spec["containers"][0])
    assert app["LABEL_STUDIO_HOST"] == app["CSRF_TRUSTED_ORIGINS"] == "https://label.example.org"
    assert app["S3_ENDPOINT"] == "https://s3.example.org"
    assert app["AWS_DEFAULT_REGION"] == "eu-central-1"
    assert app["POSTGRE_HOST"] == "db.example.org"
    service = obj(objects, "Service", "label-studio")
    assert not service["metadata"].get("annotations")
    assert service["spec"]["ports"][0]["port"] == 8080


def test_offline_lab_with_a_registry_mirror_and_no_s3(tmp_path: Path) -> None:
    _values, objects = render(
        tmp_path,
        {
            "label_studio_image_registry": "registry.lab.local:5000",
            "label_studio_s3_enabled": False,
            "lab_storage_class": "nfs-client",
            "label_studio_storage_size": "50Gi",
        },
    )
    spec = obj(objects, "Deployment", "label-studio")["spec"]["template"]["spec"]
    for container in spec["containers"] + spec["initContainers"]:
        assert container["image"] == "registry.lab.local:5000/heartexlabs/label-studio:1.23.0"
    app = env_of(spec["containers"][0])
    assert not {"S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(app)
    # No address yet: Label Studio is told its in-cluster URL until the role reads the address.
    assert app["LABEL_STUDIO_HOST"] == f"http://label-studio.{NAMESPACE}.svc"
    claim = obj(objects, "PersistentVolumeClaim", "label-studio-ls-pvc")
    assert claim["spec"]["storageClassName"] == "nfs-client"
    assert claim["spec"]["resources"]["requests"] == {"storage": "50Gi"}
