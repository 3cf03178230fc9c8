"""Real services for the module tests: moto S3, Label Studio and MLflow on 127.0.0.1.

Each is a session-scoped process on a free port with its own temp dir, stopped at the end. The
modules run through ``ansible-playbook`` (a subprocess), so their argument specs, check mode and
error handling are exercised as a user's playbook would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.executable).parent
LS_BIN = REPO / ".venv-labelstudio" / "bin" / "label-studio"
LS_TOKEN = "ailab-test-token-0123456789abcdef"  # Label Studio accepts at most 40 characters
S3_KEY = "ailab-test-access"
S3_SECRET = "ailab-test-secret-0123456789"

# No process started here talks to anything but 127.0.0.1.
OFFLINE_ENV = {
    "YOLO_OFFLINE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "COLLECT_ANALYTICS": "false",
    "LATEST_VERSION_CHECK": "false",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float, what: str) -> None:
    """Poll ``url`` until it answers 200; fail with the service's log tail otherwise."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.5)
    pytest.fail(f"{what} did not answer {url} in {timeout} s ({last}):\n{log.read_text()[-3000:]}")


def start(cmd: list[str], env: dict, log: Path, cwd: Path) -> subprocess.Popen:
    handle = log.open("wb")
    # A session of its own, so stopping it also stops the workers it forks.
    return subprocess.Popen(
        cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def base_env() -> dict:
    env = dict(os.environ)
    env.update(OFFLINE_ENV)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A moto S3 server; returns its endpoint and a boto3 client on it."""
    import boto3

    moto = VENV_BIN / "moto_server"
    if not moto.exists():
        pytest.fail(
            f"moto_server is missing from {VENV_BIN}: run make venv (requirements/dev.txt has moto[server])"
        )
    tmp = tmp_path_factory.mktemp("moto")
    port = free_port()
    proc = start([str(moto), "-H", "127.0.0.1", "-p", str(port)], base_env(), tmp / "moto.log", tmp)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_http(endpoint + "/moto-api/", proc, tmp / "moto.log", 60, "moto_server")
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
            region_name="us-east-1",
        )
        yield {"endpoint": endpoint, "client": client}
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """One Label Studio for the session, with an admin whose legacy API token is LS_TOKEN."""
    if not LS_BIN.exists():
        pytest.fail(
            f"Label Studio is not installed at {LS_BIN.parent.parent}: run make labelstudio-venv "
            "(it installs requirements/labelstudio.txt into .venv-labelstudio)"
        )
    tmp = tmp_path_factory.mktemp("labelstudio")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = base_env()
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(tmp / "data"),
        LABEL_STUDIO_USERNAME="admin@ailab.test",
        LABEL_STUDIO_PASSWORD="ailab-test-password",
        LABEL_STUDIO_USER_TOKEN=LS_TOKEN,
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
        LABEL_STUDIO_HOST=url,
        DISABLE_SIGNUP_WITHOUT_LINK="true",
        # The test S3 (like an in-cluster MinIO) is on a loopback/private address, which Label
        # Studio's SSRF guard refuses as a storage endpoint unless told otherwise.
        SSRF_PROTECTION_ENABLED="false",
        DJANGO_DB="sqlite",
    )
    cmd = [str(LS_BIN), "start", "--no-browser", "--port", str(port), "--internal-host", "127.0.0.1"]
    proc = start(cmd, env, tmp / "labelstudio.log", tmp)
    try:
        wait_http(url + "/health", proc, tmp / "labelstudio.log", 180, "Label Studio")
        yield {"url": url, "token": LS_TOKEN, "log": tmp / "labelstudio.log"}
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory, s3_server):
    """An MLflow tracking server with a SQLite backend and proxied artifacts in the moto S3."""
    tmp = tmp_path_factory.mktemp("mlflow")
    s3_server["client"].create_bucket(Bucket="mlflow")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = base_env()
    env.update(
        MLFLOW_S3_ENDPOINT_URL=s3_server["endpoint"],
        AWS_ACCESS_KEY_ID=S3_KEY,
        AWS_SECRET_ACCESS_KEY=S3_SECRET,
        AWS_DEFAULT_REGION="us-east-1",
    )
    cmd = [
        str(VENV_BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        "sqlite:///%s" % (tmp / "mlflow.db"),
        "--artifacts-destination",
        "s3://mlflow/artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    proc = start(cmd, env, tmp / "mlflow.log", tmp)
    try:
        wait_http(url + "/health", proc, tmp / "mlflow.log", 120, "MLflow")
        yield {"url": url, "log": tmp / "mlflow.log"}
    finally:
        stop(proc)


class Playbook:
    """Run tasks through ansible-playbook against localhost and return each task's result."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.runs = 0

    def __call__(self, tasks: list[dict], check: bool = False, expect_rc: int | None = 0) -> list[dict]:
        self.runs += 1
        playbook = self.workdir / f"play{self.runs:02d}.yml"
        play = [
            {
                "name": "Exercise the ailab.platform modules",
                "hosts": "localhost",
                "gather_facts": False,
                "tasks": tasks,
            }
        ]
        playbook.write_text(yaml.safe_dump(play, sort_keys=False))
        env = base_env()
        env.update(
            ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
            ANSIBLE_COLLECTIONS_PATH=str(REPO / ".collections"),
            ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_LOCAL_TEMP=str(self.workdir / "ansible-tmp"),
        )
        cmd = [
            str(VENV_BIN / "ansible-playbook"),
            "-i",
            "localhost,",
            "-c",
            "local",
            # The modules need this venv's boto3/mlflow: run them with its interpreter.
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            str(playbook),
        ]
        if check:
            cmd.append("--check")
        proc = subprocess.run(
            cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600, check=False
        )
        if expect_rc is not None and proc.returncode != expect_rc:
            pytest.fail(
                f"ansible-playbook exited {proc.returncode}:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
            )
        try:
            output = json.loads(proc.stdout)
        except ValueError:
            pytest.fail(f"ansible-playbook did not print JSON:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        tasks_out = output["plays"][0]["tasks"]
        if os.environ.get("AILAB_TEST_TIMINGS"):
            for task in tasks_out:
                duration = task["task"]["duration"]
                print("TIMING", task["task"]["name"], duration["start"], duration["end"])
        return [task["hosts"]["localhost"] for task in tasks_out]


@pytest.fixture(scope="session")
def playbook(tmp_path_factory):
    if not (REPO / ".collections" / "ansible_collections" / "ailab" / "platform").exists():
        pytest.fail("The collection link is missing: run make collection")
    return Playbook(tmp_path_factory.mktemp("playbooks"))


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("work")
    yield path
    shutil.rmtree(path, ignore_errors=True)
