"""The label_studio role through playbooks/platform.yml against the test control plane (tests/kube/).

Lifecycle: bad settings fail before anything changes; the first run installs the vendored chart
(../shared/charts/label-studio, as an offline lab does with ``lab_chart_dir``) with a pinned load
balancer address; a second run changes nothing; ``label_studio_state: absent`` removes the release
and the role's Secrets but leaves the shared namespace, the database/S3 Secrets and (unless
``label_studio_delete_data``) the media claim. kwok marks the pods Ready: no Label Studio process
runs here (that is tests/integration/roles/test_label_studio_server.py).
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
from kube_objects import delete_if_present, put_secret
from kubernetes import client
from platform_vars import platform_only

PLAYBOOK = "playbooks/platform.yml"
NAMESPACE = "ailab-platform"
# Inside the fixture's lab_loadbalancer_range (TEST-NET-2, RFC 5737): written, never contacted.
PINNED_IP = "198.51.100.244"
RELEASE = "label-studio"
CLAIM = "label-studio-ls-pvc"
ROLE_SECRETS = ("label-studio-admin", "label-studio-django-secret")
# Made by this test (see the `secrets` fixture), never by the role.
FOREIGN_SECRETS = ("postgresql-labelstudio", "s3-labelstudio")
DB_PASSWORD = "db-secret-never-in-values"


@pytest.fixture(scope="module")
def credentials_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Fixed across runs: the playbook fixture writes a new inventory (and credentials dir) per call.
    return tmp_path_factory.mktemp("label-studio-credentials") / "credentials"


def _vars(charts: Path, credentials: Path, **extra: Any) -> dict[str, Any]:
    return {
        "lab_chart_dir": str(charts),
        "lab_credentials_dir": str(credentials),
        "lab_storage_class": "local-path",
        "lab_admin_email": "admin@lab.local",
        **platform_only("label_studio"),
        "label_studio_loadbalancer_ip": PINNED_IP,
        "label_studio_wait_timeout": 120,
        "label_studio_address_timeout": 30,
        **extra,
    }


@pytest.fixture(scope="module")
def secrets(kube_api: client.ApiClient, helm: Any, platform_namespace: str) -> Iterator[client.CoreV1Api]:
    """The Secrets the postgresql and minio/s3_buckets roles make, made here by hand.

    This file tests the label_studio role alone; test_platform.py runs it after the real roles.
    """
    core = client.CoreV1Api(kube_api)
    host = f"postgresql.{NAMESPACE}.svc"
    put_secret(
        core,
        NAMESPACE,
        "postgresql-labelstudio",
        {
            "username": "labelstudio",
            "password": DB_PASSWORD,
            "database": "labelstudio",
            "host": host,
            "port": "5432",
            "uri": f"postgresql://labelstudio:{DB_PASSWORD}@{host}:5432/labelstudio",
        },
    )
    put_secret(
        core,
        NAMESPACE,
        "s3-labelstudio",
        {"AWS_ACCESS_KEY_ID": "labelstudio", "AWS_SECRET_ACCESS_KEY": "s3-secret-never-in-values"},
    )
    yield core
    # Leave the shared control plane as we found it.
    helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--ignore-not-found", "--wait")
    for name in (*FOREIGN_SECRETS, *ROLE_SECRETS):
        delete_if_present(core.delete_namespaced_secret, name, NAMESPACE)
    delete_if_present(core.delete_namespaced_persistent_volume_claim, CLAIM, NAMESPACE)


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


def _releases(helm: Any) -> list[str]:
    return [r["name"] for r in json.loads(helm("list", "-n", NAMESPACE, "-o", "json"))]


@pytest.mark.parametrize(
    ("extra", "messages"),
    [
        # One run: every setting is checked, each failure names its variable and the fix.
        (
            {
                "label_studio_loadbalancer_ip": "198.51.100.300",
                "label_studio_host": "label.example.org/studio",
                "lab_admin_email": "admin",
                "label_studio_storage_size": "10 GB",
                "lab_s3_endpoint": "minio:9000",
            },
            [
                'label_studio_loadbalancer_ip is "198.51.100.300": give one address inside',
                'label_studio_host is "label.example.org/studio": give the URL users open',
                'label_studio_admin_email (lab_admin_email by default) is "admin": give an e-mail',
                'label_studio_storage_size is "10 GB": give a Kubernetes quantity',
                'label_studio_s3_endpoint (lab_s3_endpoint by default) is "minio:9000": give the S3 API',
            ],
        ),
        # Label Studio keeps at most 40 characters of the token.
        ({"label_studio_admin_token": "t" * 41}, ["label_studio_admin_token is not accepted: use 12 to 40"]),
    ],
    ids=["settings", "token-length"],
)
def test_bad_settings_fail_before_any_change(
    platform: Any, credentials_dir: Path, helm: Any, extra: dict[str, Any], messages: list[str]
) -> None:
    # Runs before `installed`: nothing of Label Studio exists yet, and nothing may appear.
    run = platform(check=False, **extra)
    assert run.returncode != 0
    text = " ".join(run.stdout.split())  # the messages are folded over lines
    for message in messages:
        assert message in text, run.tail()
    assert "t" * 41 not in run.stdout
    assert run.recap()["changed"] == 0
    assert RELEASE not in _releases(helm)
    assert not credentials_dir.exists()


def test_install_reads_credentials_from_secrets(installed: Any, kube_api: client.ApiClient) -> None:
    deployment = client.AppsV1Api(kube_api).read_namespaced_deployment(RELEASE, NAMESPACE)
    assert deployment.status.ready_replicas == 1
    spec = deployment.spec.template.spec
    app = next(c for c in spec.containers if c.name == "app")
    refs = {
        e.name: (e.value_from.secret_key_ref.name, e.value_from.secret_key_ref.key)
        for e in app.env
        if e.value_from and e.value_from.secret_key_ref
    }
    assert refs["POSTGRE_PASSWORD"] == ("postgresql-labelstudio", "password")
    assert refs["LABEL_STUDIO_PASSWORD"] == ("label-studio-admin", "LABEL_STUDIO_PASSWORD")
    assert refs["LABEL_STUDIO_USER_TOKEN"] == ("label-studio-admin", "LABEL_STUDIO_USER_TOKEN")
    assert refs["AWS_SECRET_ACCESS_KEY"] == ("s3-labelstudio", "AWS_SECRET_ACCESS_KEY")
    literal = {e.name: e.value for e in app.env if e.value is not None}
    assert not set(refs) & set(literal)
    assert literal["LABEL_STUDIO_HOST"] == literal["CSRF_TRUSTED_ORIGINS"] == f"http://{PINNED_IP}"
    assert literal["DISABLE_SIGNUP_WITHOUT_LINK"] == "true"
    assert literal["POSTGRE_HOST"] == f"postgresql.{NAMESPACE}.svc"

    core = client.CoreV1Api(kube_api)
    service = core.read_namespaced_service(RELEASE, NAMESPACE)
    assert service.spec.type == "LoadBalancer"
    assert service.metadata.annotations["metallb.io/loadBalancerIPs"] == PINNED_IP
    assert service.status.load_balancer.ingress[0].ip == PINNED_IP
    assert [p.port for p in service.spec.ports] == [80]
    assert f"Label Studio: http://{PINNED_IP} (in the cluster http://label-studio.{NAMESPACE}.svc" in (
        " ".join(installed.stdout.split())
    )


def test_the_media_claim_is_bound(installed: Any, kube_api: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_api)
    claim = core.read_namespaced_persistent_volume_claim(CLAIM, NAMESPACE)
    assert claim.spec.storage_class_name == "local-path"
    assert claim.metadata.annotations["helm.sh/resource-policy"] == "keep"
    # Bound by the provisioner stand-in once the scheduler placed the pod (WaitForFirstConsumer).
    deadline = time.monotonic() + 30
    while claim.status.phase != "Bound" and time.monotonic() < deadline:
        time.sleep(0.5)
        claim = core.read_namespaced_persistent_volume_claim(CLAIM, NAMESPACE)
    assert claim.status.phase == "Bound"


def test_admin_credentials_are_private_and_never_printed(
    installed: Any, kube_api: client.ApiClient, credentials_dir: Path, helm: Any
) -> None:
    password_file = credentials_dir / "label-studio-admin-password"
    token_file = credentials_dir / "label-studio-token"
    for path in (password_file, token_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    password, token = password_file.read_text().strip(), token_file.read_text().strip()
    assert len(password) == 32 and password.isalnum()
    assert len(token) == 40 and token.isalnum()  # Label Studio's limit
    data = client.CoreV1Api(kube_api).read_namespaced_secret("label-studio-admin", NAMESPACE).data
    secret = {k: base64.b64decode(v).decode() for k, v in data.items()}
    assert secret == {
        "LABEL_STUDIO_USERNAME": "admin@lab.local",
        "LABEL_STUDIO_PASSWORD": password,
        "LABEL_STUDIO_USER_TOKEN": token,
    }
    for value in (password, token, DB_PASSWORD):
        assert value not in installed.stdout and value not in installed.stderr
        assert value not in helm("get", "values", RELEASE, "-n", NAMESPACE, "-o", "json")


def test_second_run_changes_nothing(installed: Any, platform: Any) -> None:
    run = platform()
    assert run.recap()["changed"] == 0, run.tail()


def test_absent_removes_the_release_and_its_secrets_only(
    installed: Any, platform: Any, kube_api: client.ApiClient, helm: Any
) -> None:
    run = platform(label_studio_state="absent")
    assert run.recap()["changed"] > 0
    assert RELEASE not in _releases(helm)
    core = client.CoreV1Api(kube_api)
    names = {s.metadata.name for s in core.list_namespaced_secret(NAMESPACE).items}
    assert not set(ROLE_SECRETS) & names
    assert set(FOREIGN_SECRETS) <= names  # the postgresql and s3 roles' Secrets stay
    assert core.read_namespace(NAMESPACE).status.phase == "Active"  # shared: never deleted
    # Uploaded files stay unless asked; asked, only the claim is left to delete.
    assert core.read_namespaced_persistent_volume_claim(CLAIM, NAMESPACE)
    again = platform(label_studio_state="absent", label_studio_delete_data=True)
    assert again.recap()["changed"] == 1, again.tail()
    claims = {c.metadata.name for c in core.list_namespaced_persistent_volume_claim(NAMESPACE).items}
    assert CLAIM not in claims
