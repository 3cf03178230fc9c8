"""The real MLflow server, started exactly as the mlflow role's rendered Deployment starts it.

The chart (../shared/charts/mlflow) is rendered with the values ``roles/mlflow/tasks/values.yml``
computes; the init containers (migration script, auth ini from its template) and the server run
here with the Deployment's own command, args and environment (Secrets resolved from the values
this test gives them). Only what names the cluster is replaced: the PostgreSQL host and port by a
local PostgreSQL 15, the S3 endpoint by moto, the listen address and port by 127.0.0.1 and a free
port, and the init containers' mount paths by local directories. Then: the Host header check, basic
auth, and a model registered with ``ailab.platform.mlflow_model`` through the proxied artifact
path by a client that has no S3 keys.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ailab_testsupport import (
    free_port,
    moto_server,
    postgresql_server,
    run_local_playbook,
    start_process,
    stop_process,
    wait_http,
)
from chart_render import render_chart, role_values

ROOT = Path(__file__).resolve().parents[3]

VENV_BIN = Path(sys.executable).parent
CHART = ROOT.parent / "shared" / "charts" / "mlflow"
NAMESPACE = "ailab-platform"
LB_IP = "198.51.100.247"
DB_USER, DB_PASSWORD, DB_NAME = "mlflow", "db0pass1word2", "mlflow"
S3_KEY, S3_SECRET = "mlflow-test-key", "mlflow-test-secret-0123456789"
ADMIN, ADMIN_PASSWORD = "admin", "Adm1nPassw0rdFromTheSecret0123ab"
BUCKET = "ailab-mlflow"
CLEAN_ENV = {
    k: v
    for k, v in os.environ.items()
    if not k.startswith(("AWS_", "MLFLOW_", "PG")) and k.lower() not in ("http_proxy", "https_proxy")
}
CLEAN_ENV.update(NO_PROXY="127.0.0.1,localhost", MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")


@pytest.fixture(scope="module")
def postgresql(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Debian's PostgreSQL on 127.0.0.1 with database and user ``mlflow`` (password auth)."""
    with postgresql_server(tmp_path_factory.mktemp("postgresql")) as pg:
        pg.psql(f"CREATE USER {DB_USER} PASSWORD '{DB_PASSWORD}'")
        pg.psql(f"CREATE DATABASE {DB_NAME} OWNER {DB_USER}")
        yield {"host": pg.host, "port": pg.port}


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with moto_server(tmp_path_factory.mktemp("moto"), access_key=S3_KEY, secret_key=S3_SECRET) as s3:
        client = s3.client()
        client.create_bucket(Bucket=BUCKET)
        yield {"endpoint": s3.endpoint, "client": client}


def _status(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return -1


def _resolve(container: dict[str, Any], objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom first, then env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(objects[("ConfigMap", source["configMapRef"]["name"])].get("data") or {})
        else:
            data = objects[("Secret", source["secretRef"]["name"])].get("data") or {}
            env.update({k: base64.b64decode(v).decode() for k, v in data.items()})
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            data = objects[("Secret", ref["name"])]["data"]
            env[item["name"]] = base64.b64decode(data[ref["key"]]).decode()
    return env


def _secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"kind": "Secret", "metadata": {"name": name}, "data": encoded}


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, postgresql: dict[str, Any], moto: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    if not (CHART / "Chart.yaml").is_file():
        pytest.skip(f"{CHART} is missing (the vendored chart sources beside the checkout)")
    tmp = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    values = role_values(
        tmp,
        "mlflow",
        "mlflow_chart_values",
        # The test's own address is the one extra: clients here reach it as 127.0.0.1:<port>.
        {"mlflow_loadbalancer_ip": LB_IP, "mlflow_allowed_hosts_extra": [f"127.0.0.1:{port}"]},
    )
    rendered = render_chart(CHART, "mlflow", NAMESPACE, tmp, values=values)
    objects = {(o["kind"], o["metadata"]["name"]): o for o in rendered}
    # What the postgresql, s3_buckets and mlflow roles put into the cluster.
    for secret in (
        _secret("postgresql-mlflow", {"username": DB_USER, "password": DB_PASSWORD}),
        _secret("s3-mlflow", {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}),
        _secret("mlflow-admin", {"username": ADMIN, "password": ADMIN_PASSWORD}),
    ):
        objects[("Secret", secret["metadata"]["name"])] = secret
    spec = objects[("Deployment", "mlflow")]["spec"]["template"]["spec"]
    init = {c["name"]: c for c in spec["initContainers"]}
    (main,) = spec["containers"]

    def local(env: dict[str, str]) -> dict[str, str]:
        env = dict(env)
        assert env["PGHOST"] == f"postgresql.{NAMESPACE}.svc" and env["PGPORT"] == "5432"
        env.update(PGHOST=postgresql["host"], PGPORT=str(postgresql["port"]))
        if "MLFLOW_S3_ENDPOINT_URL" in env:
            assert env["MLFLOW_S3_ENDPOINT_URL"] == f"http://minio.{NAMESPACE}.svc:9000"
            env["MLFLOW_S3_ENDPOINT_URL"] = moto["endpoint"]
        return {**CLEAN_ENV, **env}

    # Init container 2: the chart's migration script, with its env (init 1 only waits for the port).
    migration = init["mlflow-db-migration"]
    script = tmp / "migrations.py"
    script.write_text(objects[("ConfigMap", "mlflow-migrations")]["data"]["migrations.py"])
    assert migration["command"] == ["python"] and migration["args"] == ["/opt/mlflow/migrations.py"]
    out = subprocess.run(
        [str(VENV_BIN / "python"), str(script)], env=local(_resolve(migration, objects)),
        capture_output=True, text=True, timeout=300, cwd=tmp, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]

    # Init container 3: the chart's sed script writes the auth ini from its template.
    ini_init = init["ini-file-initializer"]
    (template_dir := tmp / "template").mkdir()
    (config_dir := tmp / "config").mkdir()
    template = objects[("ConfigMap", "mlflow-auth-ini-template")]["data"]["auth_template.ini"]
    (template_dir / "auth_template.ini").write_text(template)
    sed_script = (
        ini_init["args"][0].replace("/template/", f"{template_dir}/").replace("/config/", f"{config_dir}/")
    )
    out = subprocess.run(
        ini_init["command"] + [sed_script], env={**CLEAN_ENV, **_resolve(ini_init, objects)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    ini = (config_dir / "auth_result.ini").read_text()
    pg_in_cluster = f"@postgresql.{NAMESPACE}.svc:5432/"
    assert f"postgresql://{DB_USER}:{DB_PASSWORD}{pg_in_cluster}{DB_NAME}" in ini
    assert f"admin_username = {ADMIN}" in ini and f"admin_password = {ADMIN_PASSWORD}" in ini
    auth_ini = tmp / "basic_auth.ini"
    auth_ini.write_text(ini.replace(pg_in_cluster, f"@127.0.0.1:{postgresql['port']}/"))

    # The server: the container's command and args, the kubelet's environment.
    env = local(_resolve(main, objects))
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == "/etc/mlflow/auth/basic_auth.ini"
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_ini)
    args = [a.replace("$(", "${") for a in main["args"]]
    assert not [a for a in args if "${" in a], "no $(VAR) references expected in the args"
    assert "--host=0.0.0.0" in args and "--port=5000" in args
    args = [{"--host=0.0.0.0": "--host=127.0.0.1", "--port=5000": f"--port={port}"}.get(a, a) for a in args]
    command = [str(VENV_BIN / main["command"][0]), *args]
    log = tmp / "mlflow.log"
    proc = start_process(command, log, env=env, cwd=tmp)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", proc, log, 180, "mlflow server")
        assert proc.poll() is None, log.read_text()[-3000:]
        yield {"url": url, "port": port, "command": command, "env": env, "log": log, "tmp": tmp}
    finally:
        stop_process(proc)


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


API = "/api/2.0/mlflow/experiments/search?max_results=1"


def test_the_server_runs_the_rendered_configuration(server: dict[str, Any]) -> None:
    args = server["command"][1:]
    assert args[0] == "server" and "--serve-artifacts" in args
    assert "--backend-store-uri=postgresql://" in args and "--app-name=basic-auth" in args
    assert "--artifacts-destination=s3://ailab-mlflow/" in args
    assert "AWS_SECRET_ACCESS_KEY" in server["env"] and "PGPASSWORD" in server["env"]


@pytest.mark.parametrize(
    "host",
    [
        "mlflow",
        f"mlflow.{NAMESPACE}.svc:5000",
        f"mlflow.{NAMESPACE}.svc.cluster.local:5000",
        f"{LB_IP}:5000",
        "mlflow.lab.local",
    ],
)
def test_allowed_hosts_are_served(server: dict[str, Any], host: str) -> None:
    headers = {"Host": host, **_basic(ADMIN, ADMIN_PASSWORD)}
    assert _status(server["url"] + API, headers) == 200


@pytest.mark.parametrize("host", ["evil.example.org", f"{LB_IP}:8080", "mlflow.other-namespace.svc:5000"])
def test_foreign_hosts_are_refused(server: dict[str, Any], host: str) -> None:
    headers = {"Host": host, **_basic(ADMIN, ADMIN_PASSWORD)}
    assert _status(server["url"] + API, headers) == 403


def test_basic_auth(server: dict[str, Any]) -> None:
    host = {"Host": f"mlflow.{NAMESPACE}.svc:5000"}
    assert _status(server["url"] + API, host) == 401
    assert _status(server["url"] + API, {**host, **_basic(ADMIN, "wrong-password")}) == 401
    assert _status(server["url"] + API, {**host, **_basic(ADMIN, ADMIN_PASSWORD)}) == 200


def _play(tmp: Path, name: str, module_args: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """Run ``ailab.platform.mlflow_model`` with ``module_args`` in a playbook; save its result."""
    play = [
        {
            "name": "Register a model",
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Register the weights",
                    "ailab.platform.mlflow_model": module_args,
                    "register": "out",
                },
                {
                    "name": "Save the result",
                    "ansible.builtin.copy": {
                        "content": "{{ out | to_json }}",
                        "dest": str(tmp / f"{name}.json"),
                        "mode": "0600",
                    },
                },
            ],
        }
    ]
    out_dir = tmp / name
    out_dir.mkdir()
    return run_local_playbook(play, out_dir, env=CLEAN_ENV)


def test_registering_without_a_login_names_the_fix(server: dict[str, Any]) -> None:
    weights = server["tmp"] / "anonymous.pt"
    weights.write_bytes(os.urandom(1024))
    args = {"tracking_uri": server["url"], "name": "anonymous", "model_file": str(weights)}
    out = _play(server["tmp"], "anonymous", args)
    assert out.returncode != 0
    assert "refused" in out.stdout and "HTTP 401" in out.stdout, out.stdout[-3000:]
    assert "give username and password (or MLFLOW_TRACKING_USERNAME/_PASSWORD)" in out.stdout


def test_model_registered_through_the_proxy_lands_in_s3(server: dict[str, Any], moto: dict[str, Any]) -> None:
    tmp = server["tmp"]
    weights = tmp / "best.pt"
    weights.write_bytes(os.urandom(4096))
    # The client has no S3 keys and no S3 endpoint: only MLflow's URL and the admin's login.
    args = {
        "tracking_uri": server["url"],
        "username": ADMIN,
        "password": ADMIN_PASSWORD,
        "name": "server-test",
        "model_file": str(weights),
        "alias": "champion",
    }
    out = _play(tmp, "registered", args)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:] + server["log"].read_text()[-2000:]
    assert ADMIN_PASSWORD not in out.stdout
    registered = json.loads((tmp / "registered.json").read_text())
    assert registered["changed"] and registered["version"] == "1"
    assert registered["source"].startswith("runs:/")

    keys = [o["Key"] for o in moto["client"].list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    stored = [k for k in keys if k.endswith("/best.pt")]
    assert len(stored) == 1, keys
    body = moto["client"].get_object(Bucket=BUCKET, Key=stored[0])["Body"].read()
    assert body == weights.read_bytes()
