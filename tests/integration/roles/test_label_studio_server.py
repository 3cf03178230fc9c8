"""The real Label Studio 1.23, started with exactly the configuration the label_studio role renders.

The chart (../shared/charts/label-studio) is rendered with the values
``roles/label_studio/tasks/values.yml`` computes; the migration init container's command
(``manage.py locked_migrate``) and then the server run here with the containers' own environment,
every ``secretKeyRef`` resolved from what the role's Secret (``label-studio-admin``) and the
postgresql/s3_buckets roles' Secrets hold. Only what cannot be the same here is replaced, and
asserted first: the PostgreSQL host and port (a local PostgreSQL 15), the S3 endpoint (moto on
127.0.0.1 for the in-cluster MinIO), the data directory (the image's /label-studio/data) and the
server: the image runs ``label-studio init`` (creates the admin from the same environment) and
uwsgi behind nginx, here ``label-studio start`` does both on 127.0.0.1 and a free port.

Then: the admin logs in through the web form, from the URL users open (the CSRF origin); sign-up
without an invitation is refused; the generated token drives ``ailab.platform.label_studio_project``;
and images in the lab's S3 reach the browser either proxied by Label Studio (``presign: false``) or
through a redirect to the S3 endpoint the pod was given (``presign: true``).
"""

from __future__ import annotations

import base64
import http.cookiejar
import json
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ailab_testsupport import (
    free_port,
    moto_server,
    offline_env,
    postgresql_server,
    run_local_playbook,
    start_process,
    stop_process,
    wait_http,
)
from chart_render import render_chart, role_values

ROOT = Path(__file__).resolve().parents[3]

LS_VENV = ROOT / ".venv-labelstudio"
CHART = ROOT.parent / "shared" / "charts" / "label-studio"
NAMESPACE = "ailab-platform"
LB_IP = "198.51.100.248"
USER_URL = f"http://{LB_IP}"  # port 80: what browsers send as Origin
DB_USER, DB_PASSWORD, DB_NAME = "labelstudio", "db0pass1word2", "labelstudio"
S3_KEY, S3_SECRET = "labelstudio", "labelstudio-s3-secret-0123456789"
ADMIN, ADMIN_PASSWORD = "admin@lab.local", "Adm1nPassw0rdFromTheSecret0123ab"
TOKEN = "T0kenFromTheRoleSecret0123456789abcdefgh"  # 40 characters, as the role generates
BUCKET = "ailab-datasets"
IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8  # content is compared byte for byte


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"kind": "Secret", "metadata": {"name": name}, "data": encoded}


def _resolve(container: dict[str, Any], objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
    """The container's environment as the kubelet builds it from values and secretKeyRefs."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            data = objects[("Secret", ref["name"])]["data"]
            env[item["name"]] = base64.b64decode(data[ref["key"]]).decode()
    return env


@pytest.fixture(scope="module")
def postgresql(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Debian's PostgreSQL on 127.0.0.1 with the database and owner the postgresql role makes."""
    with postgresql_server(tmp_path_factory.mktemp("postgresql")) as pg:
        pg.psql(f"CREATE USER {DB_USER} PASSWORD '{DB_PASSWORD}'")
        pg.psql(f"CREATE DATABASE {DB_NAME} OWNER {DB_USER}")
        yield {"host": pg.host, "port": pg.port}


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto with the datasets bucket and two images, one per storage prefix."""
    with moto_server(tmp_path_factory.mktemp("moto"), access_key=S3_KEY, secret_key=S3_SECRET) as server:
        client = server.client()
        client.create_bucket(Bucket=BUCKET)
        for prefix in ("proxied", "presigned"):
            client.put_object(Bucket=BUCKET, Key=f"{prefix}/part-1.png", Body=IMAGE, ContentType="image/png")
        yield server.endpoint


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, postgresql: dict[str, Any], s3: str
) -> Iterator[dict[str, Any]]:
    if not (CHART / "Chart.yaml").is_file():
        pytest.skip(f"{CHART} is missing (the vendored chart sources beside the checkout)")
    if not (LS_VENV / "bin" / "label-studio").exists():
        pytest.fail(f"Label Studio is not installed in {LS_VENV}: run make labelstudio-venv")
    tmp = tmp_path_factory.mktemp("label-studio-server")
    values = role_values(
        tmp, "label_studio", "label_studio_chart_values", {"label_studio_loadbalancer_ip": LB_IP}
    )
    rendered = render_chart(CHART, "label-studio", NAMESPACE, tmp, values=values)
    objects = {(o["kind"], o["metadata"]["name"]): o for o in rendered}
    # What the label_studio, postgresql and s3_buckets roles put into the cluster (the Django key
    # Secret is the chart's own, rendered above).
    for secret in (
        _secret(
            "label-studio-admin",
            {
                "LABEL_STUDIO_USERNAME": ADMIN,
                "LABEL_STUDIO_PASSWORD": ADMIN_PASSWORD,
                "LABEL_STUDIO_USER_TOKEN": TOKEN,
            },
        ),
        _secret("postgresql-labelstudio", {"username": DB_USER, "password": DB_PASSWORD}),
        _secret("s3-labelstudio", {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}),
    ):
        objects[("Secret", secret["metadata"]["name"])] = secret
    spec = objects[("Deployment", "label-studio")]["spec"]["template"]["spec"]
    (migrate,) = spec["initContainers"]
    app = next(c for c in spec["containers"] if c["name"] == "app")
    data_dir = tmp / "data"

    def local(env: dict[str, str]) -> dict[str, str]:
        env = dict(env)
        assert (env["POSTGRE_HOST"], env["POSTGRE_PORT"]) == (f"postgresql.{NAMESPACE}.svc", "5432")
        env.update(POSTGRE_HOST=postgresql["host"], POSTGRE_PORT=str(postgresql["port"]))
        if "S3_ENDPOINT" in env:
            assert env["S3_ENDPOINT"] == f"http://minio.{NAMESPACE}.svc:9000"
            env["S3_ENDPOINT"] = s3
        # The image sets the data directory (on the claim, /label-studio/data) in its own env.
        return offline_env({**env, "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir)})

    # The init container: the image's label-studio-migrate is manage.py locked_migrate.
    assert migrate["args"] == ["label-studio-migrate"]
    manage = next(LS_VENV.glob("lib/python3*/site-packages/label_studio/manage.py"))
    migrate_command = [str(LS_VENV / "bin" / "python"), str(manage), "locked_migrate"]
    out = subprocess.run(
        migrate_command, env=local(_resolve(migrate, objects)),
        capture_output=True, text=True, timeout=600, cwd=tmp, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]

    env = local(_resolve(app, objects))
    assert env["SKIP_DB_MIGRATIONS"] == "true" and env["DJANGO_DB"] == "default"
    port = free_port()
    command = [str(LS_VENV / "bin" / "label-studio"), "start", "--no-browser"]
    command += ["--port", str(port), "--internal-host", "127.0.0.1"]
    log = tmp / "label-studio.log"
    proc = start_process(command, log, env=env, cwd=tmp)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", proc, log, 240, "Label Studio")
        yield {"url": url, "env": env, "log": log, "tmp": tmp}
    finally:
        stop_process(proc)


def _form_session(url: str) -> tuple[urllib.request.OpenerDirector, str]:
    """A cookie session that loaded the login page; returns it and its CSRF token."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect())
    with opener.open(url + "/user/login/", timeout=30) as response:
        page = response.read().decode()
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert match, page[:2000]
    return opener, match.group(1)


def _post(
    opener: urllib.request.OpenerDirector, url: str, fields: dict[str, str], origin: str
) -> tuple[int, str]:
    request = urllib.request.Request(
        url, data=urllib.parse.urlencode(fields).encode(), headers={"Origin": origin, "Referer": origin + "/"}
    )
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Location", "")


def _login(url: str, password: str, origin: str = USER_URL) -> tuple[int, str]:
    opener, csrf = _form_session(url)
    fields = {"csrfmiddlewaretoken": csrf, "email": ADMIN, "password": password}
    return _post(opener, url + "/user/login/", fields, origin)


def _api(url: str, path: str, token: str = TOKEN) -> Any:
    request = urllib.request.Request(url + path, headers={"Authorization": f"Token {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_the_server_runs_the_rendered_settings(server: dict[str, Any]) -> None:
    env = server["env"]
    assert env["LABEL_STUDIO_HOST"] == env["CSRF_TRUSTED_ORIGINS"] == USER_URL
    assert env["DISABLE_SIGNUP_WITHOUT_LINK"] == "true"
    assert env["LABEL_STUDIO_USERNAME"] == ADMIN and env["LABEL_STUDIO_USER_TOKEN"] == TOKEN
    assert env["POSTGRE_PASSWORD"] == DB_PASSWORD and env["AWS_SECRET_ACCESS_KEY"] == S3_SECRET


def test_the_admin_logs_in_from_the_url_users_open(server: dict[str, Any]) -> None:
    status, location = _login(server["url"], ADMIN_PASSWORD)
    assert status == 302 and "/user/login" not in location, (status, location)
    # A wrong password stays on the form; a page from a foreign origin fails the CSRF check.
    status, page = _login(server["url"], "wrong-password")
    assert status == 200 and "csrfmiddlewaretoken" in page
    assert _login(server["url"], ADMIN_PASSWORD, origin="http://evil.example.org")[0] == 403


def test_sign_up_without_an_invitation_is_refused(server: dict[str, Any]) -> None:
    opener, csrf = _form_session(server["url"])
    fields = {"csrfmiddlewaretoken": csrf, "email": "stranger@example.org", "password": "Str4ngerPassw0rd!"}
    status, _ = _post(opener, server["url"] + "/user/signup/", fields, USER_URL)
    assert status == 403
    users = _api(server["url"], "/api/users/")
    assert [u["email"] for u in users] == [ADMIN]


def _project(server: dict[str, Any], name: str, storage: dict[str, Any]) -> dict[str, Any]:
    """Run ailab.platform.label_studio_project with the role's token; return its result."""
    tmp = server["tmp"] / name
    tmp.mkdir()
    play = [
        {
            "name": "Make a project on the lab's S3",
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Ensure the project",
                    "ailab.platform.label_studio_project": {
                        "url": server["url"],
                        "token": TOKEN,
                        "title": f"Parts {name}",
                        "classes": ["bolt", "nut"],
                        "source_storage": storage,
                    },
                    "register": "out",
                },
                {
                    "name": "Save the result",
                    "ansible.builtin.copy": {
                        "content": "{{ out | to_json }}",
                        "dest": str(tmp / "out.json"),
                        "mode": "0600",
                    },
                },
            ],
        }
    ]
    out = run_local_playbook(play, tmp)
    assert out.returncode == 0, out.stdout[-4000:] + server["log"].read_text()[-3000:]
    assert TOKEN not in out.stdout
    return json.loads((tmp / "out.json").read_text())


def _task_image_url(server: dict[str, Any], project_id: int) -> str:
    tasks = _api(server["url"], f"/api/tasks/?project={project_id}")
    tasks = tasks["tasks"] if isinstance(tasks, dict) else tasks
    (task,) = tasks
    image = next(iter(task["data"].values()))
    # Label Studio hands the browser its own resolver URL for s3:// objects.
    path = urllib.parse.urlsplit(image)
    assert "/resolve/" in path.path or "/presign/" in path.path, image
    return f"{server['url']}{path.path}?{path.query}"


def test_images_in_the_labs_s3_are_proxied_by_label_studio(server: dict[str, Any]) -> None:
    # The storage names no endpoint and no keys: Label Studio uses S3_ENDPOINT and the pod's keys.
    result = _project(server, "proxied", {"bucket": BUCKET, "prefix": "proxied", "presign": False})
    assert result["changed"] and result["tasks_added"] == 1, result
    url = _task_image_url(server, result["project_id"])
    request = urllib.request.Request(url, headers={"Authorization": f"Token {TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.read() == IMAGE
    # Without Label Studio's login, nothing.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=30)
    assert refused.value.code in (401, 403)


def test_presigned_images_point_the_browser_at_the_pods_s3_endpoint(server: dict[str, Any], s3: str) -> None:
    result = _project(server, "presigned", {"bucket": BUCKET, "prefix": "presigned", "presign": True})
    assert result["tasks_added"] == 1, result
    url = _task_image_url(server, result["project_id"])
    opener = urllib.request.build_opener(_NoRedirect())
    request = urllib.request.Request(url, headers={"Authorization": f"Token {TOKEN}"})
    with pytest.raises(urllib.error.HTTPError) as redirect:
        opener.open(request, timeout=30)
    assert redirect.value.code == 303
    location = redirect.value.headers["Location"]
    # S3_ENDPOINT (here moto, in the lab the address browsers reach): the browser loads it there.
    assert location.startswith(f"{s3}/{BUCKET}/presigned/part-1.png?"), location
    with urllib.request.urlopen(location, timeout=30) as response:
        assert response.read() == IMAGE
