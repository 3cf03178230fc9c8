"""playbooks/platform.yml as a whole against the test control plane (tests/kube/).

What each service role does is tested in its own file (test_metallb.py, test_storage.py, ...);
here: the play stops before anything changes when it cannot reach the API, and the whole platform
layer (MetalLB, storage, MinIO, buckets, PostgreSQL, MLflow, Label Studio, JupyterHub) installs in
one run as the shipped lab inventory configures it, each role finding what the previous ones made,
and a second run changes nothing. kwok runs no container: a real moto S3 server stands in for the
MinIO pod in the bucket step (``s3_buckets_endpoint``), and the services' own processes are
tests/integration/roles/test_mlflow_server.py, test_label_studio_server.py and
test_jupyterhub_hub.py.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ailab_testsupport import moto_server
from kubernetes import client
from platform_vars import PLATFORM_COMPONENTS, shipped_lab_vars

PLAYBOOK = "playbooks/platform.yml"
NAMESPACE = "ailab-platform"


def test_unreachable_api_fails_first_with_the_fix(
    playbook: Callable[..., Any], kube_cluster: Any, tmp_path: Path
) -> None:
    # The control plane's kubeconfig with the server moved to a port nothing listens on.
    config = yaml.safe_load(Path(kube_cluster.kubeconfig).read_text())
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))

    run = playbook(PLAYBOOK, {"lab_kubeconfig": str(kubeconfig)}, check=False)
    assert run.returncode != 0
    assert "cannot reach the Kubernetes API at https://127.0.0.1:1" in run.stdout, run.tail()
    assert "has cluster.yml run? is lab_kubeconfig" in run.stdout
    assert "Traceback" not in run.stdout
    assert run.recap()["changed"] == 0


def test_missing_kubeconfig_names_the_variable(playbook: Callable[..., Any], tmp_path: Path) -> None:
    run = playbook(PLAYBOOK, {"lab_kubeconfig": str(tmp_path / "nowhere")}, check=False)
    assert run.returncode != 0
    assert f"lab_kubeconfig ({tmp_path / 'nowhere'}) does not exist: has cluster.yml run?" in run.stdout
    assert run.recap()["changed"] == 0


# ---------------------------------------------------------------------------------------------
# The whole data layer in one run


@pytest.fixture(scope="module")
def lab(shared_charts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The shipped lab inventory's variables, with the vendored charts and a moto S3 stand-in."""
    keep = ("lab_s3_", "lab_platform_namespace", "lab_storage_class", "lab_domain", "lab_admin_")
    with moto_server(tmp_path_factory.mktemp("moto")) as s3:
        yield {
            **shipped_lab_vars(*keep),
            "lab_chart_dir": str(shared_charts),
            "lab_credentials_dir": str(tmp_path_factory.mktemp("platform-lab") / "credentials"),
            "s3_buckets_endpoint": s3.endpoint,
            "metallb_wait_timeout": 120,
            "minio_wait_timeout": 120,
            "postgresql_wait_timeout": 120,
            "mlflow_wait_timeout": 120,
            "label_studio_wait_timeout": 120,
            "jupyterhub_wait_timeout": 120,
            # GPU profiles need playbooks/gpu.yml's RuntimeClass, which this play does not make:
            # test_jupyterhub.py covers them.
            "jupyterhub_gpu_enabled": False,
        }


@pytest.fixture(scope="module")
def installed(playbook: Callable[..., Any], lab: dict[str, Any], kube_api: client.ApiClient) -> Iterator[Any]:
    run = playbook(PLAYBOOK, lab)
    yield run
    # Leave the shared control plane as the other tests expect it: every component removed.
    states = {f"{c}_state": "absent" for c in PLATFORM_COMPONENTS if c != "s3_buckets"}
    playbook(
        PLAYBOOK,
        {
            **lab,
            **states,
            "s3_buckets_enabled": False,
            "minio_delete_data": True,
            "postgresql_delete_data": True,
            "label_studio_delete_data": True,
        },
    )


def _mlflow_container(api: client.ApiClient) -> Any:
    deployment = client.AppsV1Api(api).read_namespaced_deployment("mlflow", NAMESPACE)
    return deployment.spec.template.spec.containers[0]


def _secret_keys(api: client.ApiClient, name: str) -> set[str]:
    return set(client.CoreV1Api(api).read_namespaced_secret(name, NAMESPACE).data)


def test_each_role_finds_what_the_previous_ones_made(installed: Any, kube_api: client.ApiClient) -> None:
    assert installed.recap()["changed"] > 0
    # MLflow reads the database and S3 Secrets that the postgresql and minio roles wrote.
    container = _mlflow_container(kube_api)
    refs = {
        e.value_from.secret_key_ref.name
        for e in container.env or []
        if e.value_from and e.value_from.secret_key_ref
    }
    assert {"postgresql-mlflow", "s3-mlflow"} <= refs
    assert {"username", "password", "host", "uri"} <= _secret_keys(kube_api, "postgresql-mlflow")
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= _secret_keys(kube_api, "s3-mlflow")
    # Label Studio reads the postgresql role's Secret and the labelstudio S3 user's keys.
    app = client.AppsV1Api(kube_api).read_namespaced_deployment("label-studio", NAMESPACE).spec.template.spec
    ls_refs = {
        e.value_from.secret_key_ref.name
        for c in app.containers
        for e in c.env or []
        if e.value_from and e.value_from.secret_key_ref
    }
    assert {"postgresql-labelstudio", "s3-labelstudio", "label-studio-admin"} <= ls_refs
    # MinIO's, PostgreSQL's and Label Studio's volumes are on the one default class.
    claims = client.CoreV1Api(kube_api).list_namespaced_persistent_volume_claim(NAMESPACE).items
    assert {c.metadata.name: c.spec.storage_class_name for c in claims} == {
        "minio": "local-path",
        "data-postgresql-0": "local-path",
        "label-studio-ls-pvc": "local-path",
        "jupyterhub-hub-db-dir": "local-path",
    }
    classes = client.StorageV1Api(kube_api).list_storage_class().items
    defaults = [
        c.metadata.name
        for c in classes
        if (c.metadata.annotations or {}).get("storageclass.kubernetes.io/is-default-class") == "true"
    ]
    assert defaults == ["local-path"]


def test_mlflow_allows_the_address_metallb_picked(installed: Any, kube_api: client.ApiClient) -> None:
    service = client.CoreV1Api(kube_api).read_namespaced_service("mlflow", NAMESPACE)
    (ingress,) = service.status.load_balancer.ingress
    env = client.CoreV1Api(kube_api).read_namespaced_config_map("mlflow-env-configmap", NAMESPACE).data
    allowed = env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert {ingress.ip, f"{ingress.ip}:5000"} <= set(allowed), allowed
    assert f"MLflow: http://{ingress.ip}:5000" in installed.stdout


def test_label_studio_is_told_the_address_metallb_picked(installed: Any, kube_api: client.ApiClient) -> None:
    # No pinned address: LABEL_STUDIO_HOST and the CSRF origin are the address read back after
    # the first install, and S3_ENDPOINT is MinIO's load balancer URL (browsers reach it too).
    core = client.CoreV1Api(kube_api)
    (ingress,) = core.read_namespaced_service("label-studio", NAMESPACE).status.load_balancer.ingress
    (minio,) = core.read_namespaced_service("minio", NAMESPACE).status.load_balancer.ingress
    app = client.AppsV1Api(kube_api).read_namespaced_deployment("label-studio", NAMESPACE).spec.template.spec
    env = {e.name: e.value for e in app.containers[0].env if e.value is not None}
    assert env["LABEL_STUDIO_HOST"] == env["CSRF_TRUSTED_ORIGINS"] == f"http://{ingress.ip}"
    assert env["S3_ENDPOINT"] == f"http://{minio.ip}:9000"
    assert f"Label Studio: http://{ingress.ip} (in the cluster" in " ".join(installed.stdout.split())


def test_notebooks_get_the_urls_of_mlflow_and_label_studio(
    installed: Any, kube_api: client.ApiClient
) -> None:
    # What every notebook server's environment holds, from the hub's values: the facts the mlflow
    # and label_studio roles recorded earlier in the same play, and the notebooks' own S3 user.
    secret = client.CoreV1Api(kube_api).read_namespaced_secret("jupyterhub-hub", NAMESPACE)
    env = yaml.safe_load(base64.b64decode(secret.data["values.yaml"]))["singleuser"]["extraEnv"]
    assert env["MLFLOW_TRACKING_URI"] == f"http://mlflow.{NAMESPACE}.svc:5000"
    assert env["LABEL_STUDIO_URL"] == f"http://label-studio.{NAMESPACE}.svc"
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "s3-notebooks"
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"} <= _secret_keys(
        kube_api, "s3-notebooks"
    )


def test_the_services_table_names_urls_and_credential_files(installed: Any, lab: dict[str, Any]) -> None:
    credentials = lab["lab_credentials_dir"]
    table = installed.stdout.rsplit("Show the lab's services", 1)[-1]
    assert "service | URL | credentials" in table
    assert "S3 (MinIO) | http://198.51.100." in table
    assert f"{credentials}/s3-access-key" in table
    assert "PostgreSQL | postgresql://postgresql.ailab-platform.svc:5432" in table
    assert f"{credentials}/mlflow-admin-password" in table
    flat = " ".join(table.split())  # a long row is folded over lines
    assert "Label Studio | http://198.51.100." in flat
    assert f"{credentials}/label-studio-admin-password, {credentials}/label-studio-token (user admin@" in flat
    assert "JupyterHub | http://198.51.100." in flat
    assert f"password in {credentials}/jupyterhub-admin-password (user admin)" in flat


def test_second_run_changes_nothing(
    installed: Any, playbook: Callable[..., Any], lab: dict[str, Any]
) -> None:
    run = playbook(PLAYBOOK, lab)
    assert run.recap()["changed"] == 0, run.tail()


def test_every_component_has_a_switch(playbook: Callable[..., Any], lab: dict[str, Any]) -> None:
    off = {f"{c}_enabled": False for c in PLATFORM_COMPONENTS}
    run = playbook(PLAYBOOK, {**lab, **off})
    assert run.recap()["changed"] == 0, run.tail()
