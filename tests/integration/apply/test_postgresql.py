"""The postgresql role through playbooks/platform.yml against the test control plane (tests/kube/).

Lifecycle: bad input fails before any change; install (StatefulSet, Service, Secrets, the database
Job); re-run (``changed=0``); a changed input runs a new Job; an external server gets only Secrets;
removal keeps the data volume unless told otherwise. kwok runs the pods (Ready, never really
started) and marks the Job's pod Succeeded, and the volume stand-in binds the claim: no PostgreSQL
process runs here. The SQL the Job would run is exercised against a real PostgreSQL in
tests/integration/roles/test_postgresql_sql.py.
"""

from __future__ import annotations

import base64
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from platform_vars import platform_only

PLAYBOOK = "playbooks/platform.yml"
NAMESPACE = "ailab-platform"
HOST = f"postgresql.{NAMESPACE}.svc"
SECRET_KEYS = {"username", "password", "database", "host", "port", "uri"}
OWNERS = ("mlflow", "labelstudio")


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One credentials directory for every run of this module (as an inventory's would be)."""
    return tmp_path_factory.mktemp("pg-inventory") / "credentials"


@pytest.fixture(scope="module")
def run(playbook: Callable[..., Any], credentials: Path) -> Callable[..., Any]:
    """Run platform.yml with only this role (MetalLB off) and the module's credentials directory."""

    def call(*args: str, check: bool = True, **extra: Any) -> Any:
        variables = {
            **platform_only("postgresql"),
            "lab_credentials_dir": str(credentials),
            "lab_storage_class": "local-path",
            "postgresql_wait_timeout": 120,
            **extra,
        }
        return playbook(PLAYBOOK, variables, *args, check=check)

    return call


def _secret(api: client.ApiClient, name: str, namespace: str = NAMESPACE) -> dict[str, str]:
    data = client.CoreV1Api(api).read_namespaced_secret(name, namespace).data or {}
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def _jobs(api: client.ApiClient, namespace: str = NAMESPACE) -> list[Any]:
    return (
        client.BatchV1Api(api)
        .list_namespaced_job(namespace, label_selector="app.kubernetes.io/name=postgresql")
        .items
    )


def _gone(read: Callable[[], Any]) -> bool:
    try:
        read()
    except ApiException as err:
        return err.status == 404
    return False


def test_bad_database_name_fails_before_any_change(
    run: Callable[..., Any], kube_api: client.ApiClient
) -> None:
    bad = run(postgresql_databases=[{"name": "ML-flow", "owner": "mlflow"}], check=False)
    assert bad.returncode != 0
    assert "postgresql_databases holds ML-flow" in bad.stdout, bad.tail()
    assert bad.recap()["changed"] == 0
    # Nothing of the role's (the shared namespace may already exist, made by another service).
    assert _gone(lambda: client.AppsV1Api(kube_api).read_namespaced_stateful_set("postgresql", NAMESPACE))
    assert _gone(lambda: client.CoreV1Api(kube_api).read_namespaced_secret("postgresql", NAMESPACE))


def test_external_without_passwords_fails_naming_the_variable(
    run: Callable[..., Any], credentials: Path
) -> None:
    bad = run(postgresql_external_host="db.example.org", check=False)
    assert bad.returncode != 0
    for name in ("mlflow", "labelstudio"):
        assert f"give postgresql_databases[].password for {name} " in bad.stdout, bad.tail()
    assert bad.recap()["changed"] == 0
    assert not credentials.exists()


def test_duplicate_owner_fails(run: Callable[..., Any]) -> None:
    bad = run(
        postgresql_databases=[{"name": "a", "owner": "svc"}, {"name": "b", "owner": "svc"}], check=False
    )
    assert bad.returncode != 0
    assert "must name each database and each owner once" in bad.stdout, bad.tail()
    assert bad.recap()["changed"] == 0


@pytest.fixture(scope="module")
def installed(run: Callable[..., Any]) -> Any:
    first = run()
    assert first.recap()["changed"] > 0
    return first


def test_install_creates_the_server(installed: Any, kube_api: client.ApiClient) -> None:
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    labels = core.read_namespace(NAMESPACE).metadata.labels
    # One set of labels for the shared namespace (helm_release's): MinIO's mc Job needs baseline.
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"

    sts = apps.read_namespaced_stateful_set("postgresql", NAMESPACE)
    assert sts.spec.replicas == 1 and sts.status.ready_replicas == 1
    pod = sts.spec.template.spec
    (container,) = pod.containers
    assert container.image.startswith("docker.io/library/postgres:17")
    assert pod.security_context.run_as_user == 999 and pod.security_context.run_as_non_root
    assert container.security_context.capabilities.drop == ["ALL"]
    assert container.readiness_probe._exec.command[0] == "pg_isready"
    assert container.liveness_probe._exec.command[0] == "pg_isready"
    assert container.resources.requests == {"cpu": "100m", "memory": "256Mi"}
    env = {e.name: e for e in container.env}
    assert env["PGDATA"].value.startswith("/var/lib/postgresql/data/")
    assert env["POSTGRES_PASSWORD"].value_from.secret_key_ref.name == "postgresql"
    (claim,) = sts.spec.volume_claim_templates
    assert claim.spec.storage_class_name == "local-path"
    assert claim.spec.resources.requests == {"storage": "8Gi"}

    service = core.read_namespaced_service("postgresql", NAMESPACE)
    assert service.spec.type == "ClusterIP"
    assert [(p.port, p.target_port) for p in service.spec.ports] == [(5432, "postgresql")]
    # The pod was admitted (kwok then marks it Ready); its spec is within the restricted level.
    assert pod.security_context.seccomp_profile.type == "RuntimeDefault"
    assert container.security_context.allow_privilege_escalation is False
    assert core.read_namespaced_pod("postgresql-0", NAMESPACE).status.phase == "Running"


def test_the_data_volume_is_bound(installed: Any, kube_api: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_api)
    deadline = time.monotonic() + 30
    phase = None
    while time.monotonic() < deadline and phase != "Bound":
        phase = core.read_namespaced_persistent_volume_claim("data-postgresql-0", NAMESPACE).status.phase
        time.sleep(0.5)
    assert phase == "Bound"


def test_each_database_gets_a_connection_secret(
    installed: Any, kube_api: client.ApiClient, credentials: Path
) -> None:
    for owner in OWNERS:
        secret = _secret(kube_api, f"postgresql-{owner}")
        assert set(secret) == SECRET_KEYS
        password = (credentials / f"postgresql-{owner}").read_text().strip()
        assert secret["password"] == password and len(password) == 32 and password.isalnum()
        assert secret["username"] == owner and secret["database"] == owner
        assert secret["host"] == HOST and secret["port"] == "5432"
        assert secret["uri"] == f"postgresql://{owner}:{password}@{HOST}:5432/{owner}"
    superuser = _secret(kube_api, "postgresql")
    assert superuser["password"] == (credentials / "postgresql-postgres").read_text().strip()


def test_credential_files_are_private_and_never_printed(installed: Any, credentials: Path) -> None:
    files = sorted(credentials.iterdir())
    assert [f.name for f in files] == ["postgresql-labelstudio", "postgresql-mlflow", "postgresql-postgres"]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert path.read_text().strip() not in installed.stdout + installed.stderr


def test_the_database_job_ran_the_script(installed: Any, kube_api: client.ApiClient) -> None:
    (job,) = _jobs(kube_api)
    assert job.metadata.name.startswith("postgresql-init-")
    assert job.status.succeeded == 1
    assert job.spec.backoff_limit == 3 and job.spec.ttl_seconds_after_finished
    script = _secret(kube_api, "postgresql-init")["databases.sql"]
    for owner in OWNERS:
        assert f'CREATE DATABASE "{owner}" OWNER "{owner}"' in script
        assert f'REVOKE ALL ON DATABASE "{owner}" FROM PUBLIC;' in script


def test_second_run_changes_nothing(
    installed: Any, run: Callable[..., Any], kube_api: client.ApiClient, credentials: Path
) -> None:
    before = [j.metadata.name for j in _jobs(kube_api)]
    again = run("-v")
    assert again.recap()["changed"] == 0, again.tail()
    assert [j.metadata.name for j in _jobs(kube_api)] == before
    for path in credentials.iterdir():
        assert path.read_text().strip() not in again.stdout + again.stderr


def test_a_new_database_runs_a_new_job(
    installed: Any, run: Callable[..., Any], kube_api: client.ApiClient
) -> None:
    (old,) = _jobs(kube_api)
    databases = [{"name": o, "owner": o} for o in OWNERS] + [{"name": "notebooks", "owner": "jupyter_hub"}]
    changed = run(postgresql_databases=databases)
    assert changed.recap()["changed"] > 0
    (new,) = _jobs(kube_api)  # the earlier Job was deleted
    assert new.metadata.name != old.metadata.name and new.status.succeeded == 1
    secret = _secret(kube_api, "postgresql-jupyter-hub")  # "_" is not allowed in a Secret's name
    assert secret["username"] == "jupyter_hub" and secret["database"] == "notebooks"
    assert run(postgresql_databases=databases).recap()["changed"] == 0


def test_external_server_gets_only_secrets(run: Callable[..., Any], kube_api: client.ApiClient) -> None:
    namespace = "ailab-external"
    databases = [{"name": "mlflow", "owner": "mlflow", "password": "given/pass word"}]
    first = run(
        postgresql_namespace=namespace,
        postgresql_external_host="db.example.org",
        postgresql_external_port=6432,
        postgresql_databases=databases,
    )
    assert first.recap()["changed"] > 0
    assert "given/pass word" not in first.stdout
    secret = _secret(kube_api, "postgresql-mlflow", namespace)
    assert secret["host"] == "db.example.org" and secret["port"] == "6432"
    assert secret["password"] == "given/pass word"
    assert secret["uri"] == "postgresql://mlflow:given%2Fpass%20word@db.example.org:6432/mlflow"
    assert not client.AppsV1Api(kube_api).list_namespaced_stateful_set(namespace).items
    assert not _jobs(kube_api, namespace)
    gone = run(postgresql_namespace=namespace, postgresql_state="absent")
    assert gone.recap()["changed"] > 0
    assert _gone(lambda: client.CoreV1Api(kube_api).read_namespaced_secret("postgresql-mlflow", namespace))


def test_removal_keeps_the_data_unless_told(
    installed: Any, run: Callable[..., Any], kube_api: client.ApiClient, credentials: Path
) -> None:
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    removed = run(postgresql_state="absent")
    assert removed.recap()["changed"] > 0
    assert _gone(lambda: apps.read_namespaced_stateful_set("postgresql", NAMESPACE))
    assert _gone(lambda: core.read_namespaced_service("postgresql", NAMESPACE))
    assert not _jobs(kube_api)
    for name in ("postgresql", "postgresql-init", *(f"postgresql-{o}" for o in OWNERS)):
        assert _gone(lambda name=name: core.read_namespaced_secret(name, NAMESPACE)), name
    core.read_namespace(NAMESPACE)  # shared with the other services: kept
    core.read_namespaced_persistent_volume_claim("data-postgresql-0", NAMESPACE)  # the data: kept
    assert (credentials / "postgresql-mlflow").exists()

    wiped = run(postgresql_state="absent", postgresql_delete_data=True)
    assert wiped.recap()["changed"] > 0
    assert _gone(lambda: core.read_namespaced_persistent_volume_claim("data-postgresql-0", NAMESPACE))
    assert not any(credentials.iterdir())
    assert run(postgresql_state="absent").recap()["changed"] == 0
