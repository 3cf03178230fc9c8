"""The postgresql role's SQL (templates/databases.sql.j2) against a real PostgreSQL 15 server.

The apply test (tests/integration/apply/test_postgresql.py) checks the Job that would run this
script, but no pod really runs on the test control plane. Here the same template file is rendered
by Ansible's own templating (the ``template`` module, as the role's ``template`` lookup does) and
run with ``psql -v ON_ERROR_STOP=1`` as the superuser, as the Job does, against a cluster that
``ailab_testsupport.postgresql_server`` makes with Debian's initdb.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ailab_testsupport import (
    PostgresServer,
    ServiceError,
    mlflow_server,
    postgresql_server,
    run_local_playbook,
)

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = ROOT / "roles" / "postgresql" / "templates" / "databases.sql.j2"
MLFLOW_PASSWORD = "Mlflow0123456789abcdefABCDEF0123"
# A password a user might give: quotes and spaces must survive the SQL literal.
LABELSTUDIO_PASSWORD = 'it\'s a "pass" \\ word'


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    try:
        with postgresql_server(tmp_path_factory.mktemp("postgresql")) as server:
            yield server
    except ServiceError as err:
        # Not a skip: CI installs PostgreSQL (.ci/run), so a missing server is an error to fix.
        pytest.fail(str(err))


def render(directory: Path, accounts: list[dict[str, str]]) -> Path:
    """Render the role's template with ansible-playbook, with the accounts the role would compute."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "databases.sql"
    play = [
        {
            "name": "Render the postgresql role's database script",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars": {"_postgresql_accounts": accounts},
            "tasks": [
                {
                    "name": "Render databases.sql.j2",
                    "ansible.builtin.template": {"src": str(TEMPLATE), "dest": str(target), "mode": "0600"},
                }
            ],
        }
    ]
    proc = run_local_playbook(play, directory)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return target


def accounts(mlflow_password: str = MLFLOW_PASSWORD) -> list[dict[str, str]]:
    return [
        {"name": "mlflow", "owner": "mlflow", "password": mlflow_password},
        {"name": "labelstudio", "owner": "labelstudio", "password": LABELSTUDIO_PASSWORD},
    ]


@pytest.fixture(scope="module")
def applied(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The script rendered and run twice: the second run, on existing roles and databases, must pass."""
    script = render(tmp_path_factory.mktemp("sql"), accounts())
    for _ in range(2):
        postgres.psql(file=script)
    return script


def test_the_owner_connects_over_tcp_and_creates_a_table(postgres: PostgresServer, applied: Path) -> None:
    sql = "CREATE TABLE probe (id int PRIMARY KEY); INSERT INTO probe VALUES (1); SELECT count(*) FROM probe"
    out = postgres.psql(sql, database="mlflow", user="mlflow", password=MLFLOW_PASSWORD)
    assert out.stdout.split() == ["1"]
    owner = postgres.psql(
        "SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'mlflow'"
    )
    assert owner.stdout.strip() == "mlflow"
    # A password with quotes and a backslash works as given.
    postgres.psql("SELECT 1", database="labelstudio", user="labelstudio", password=LABELSTUDIO_PASSWORD)


def test_another_services_user_cannot_connect(postgres: PostgresServer, applied: Path) -> None:
    denied = postgres.psql(
        "SELECT 1", database="mlflow", user="labelstudio", password=LABELSTUDIO_PASSWORD, check=False
    )
    assert denied.returncode != 0
    assert 'permission denied for database "mlflow"' in denied.stderr


def test_the_owners_are_not_privileged(postgres: PostgresServer, applied: Path) -> None:
    out = postgres.psql(
        "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles "
        "WHERE rolname IN ('mlflow', 'labelstudio') ORDER BY rolname"
    )
    assert out.stdout.split() == ["labelstudio|f|f|f", "mlflow|f|f|f"]


def test_a_rotated_password_is_applied(
    postgres: PostgresServer, applied: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    rotated = "Rotated0123456789abcdefABCDEF01"
    postgres.psql(file=render(tmp_path_factory.mktemp("rotated"), accounts(rotated)))
    old = postgres.psql("SELECT 1", database="mlflow", user="mlflow", password=MLFLOW_PASSWORD, check=False)
    assert old.returncode != 0 and "password authentication failed" in old.stderr
    postgres.psql("SELECT 1", database="mlflow", user="mlflow", password=rotated)
    # Put the original back for the tests that follow.
    postgres.psql(file=applied)


@pytest.mark.slow
def test_mlflow_uses_the_database_with_the_owners_uri(
    postgres: PostgresServer, applied: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The Secret's uri (with psycopg2, pinned in requirements/dev.txt) is a working MLflow backend."""
    import mlflow

    uri = postgres.uri("mlflow", user="mlflow", password=MLFLOW_PASSWORD)
    with mlflow_server(tmp_path_factory.mktemp("mlflow"), backend_store_uri=uri) as server:
        client = mlflow.MlflowClient(server.url)
        experiment = client.create_experiment("postgresql-backend")
        assert client.get_experiment(experiment).name == "postgresql-backend"
    tables = postgres.psql("SELECT tablename FROM pg_tables WHERE tableowner = 'mlflow'", database="mlflow")
    assert "experiments" in tables.stdout.split()
