"""Real services for the module tests: moto S3, Label Studio and MLflow on 127.0.0.1.

Each is a session-scoped process on a free port with its own temp dir, stopped at the end. The
modules run through ``ansible-playbook`` (a subprocess), so their argument specs, check mode and
error handling are exercised as a user's playbook would.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import ailab_testsupport as support
import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
LS_BIN = REPO / ".venv-labelstudio" / "bin" / "label-studio"
LS_TOKEN = "ailab-test-token-0123456789abcdef"  # Label Studio accepts at most 40 characters
S3_KEY = "ailab-test-access"
S3_SECRET = "ailab-test-secret-0123456789"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A moto S3 server; returns its endpoint and a boto3 client on it."""
    with support.moto_server(tmp_path_factory.mktemp("moto"), access_key=S3_KEY, secret_key=S3_SECRET) as s3:
        yield {"endpoint": s3.endpoint, "client": s3.client()}


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """One Label Studio for the session, with an admin whose legacy API token is LS_TOKEN."""
    if not LS_BIN.exists():
        pytest.fail(
            f"Label Studio is not installed at {LS_BIN.parent.parent}: run make labelstudio-venv "
            "(it installs requirements/labelstudio.txt into .venv-labelstudio)"
        )
    tmp = tmp_path_factory.mktemp("labelstudio")
    port = support.free_port()
    url = f"http://127.0.0.1:{port}"
    env = support.offline_env(
        {
            "LABEL_STUDIO_BASE_DATA_DIR": str(tmp / "data"),
            "LABEL_STUDIO_USERNAME": "admin@ailab.test",
            "LABEL_STUDIO_PASSWORD": "ailab-test-password",
            "LABEL_STUDIO_USER_TOKEN": LS_TOKEN,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_HOST": url,
            "DISABLE_SIGNUP_WITHOUT_LINK": "true",
            # The test S3 (like an in-cluster MinIO) is on a loopback/private address, which Label
            # Studio's SSRF guard refuses as a storage endpoint unless told otherwise.
            "SSRF_PROTECTION_ENABLED": "false",
            "DJANGO_DB": "sqlite",
        }
    )
    cmd = [str(LS_BIN), "start", "--no-browser", "--port", str(port), "--internal-host", "127.0.0.1"]
    log = tmp / "labelstudio.log"
    proc = support.start_process(cmd, log, env=env, cwd=tmp)
    try:
        support.wait_http(url + "/health", proc, log, 180, "Label Studio")
        yield {"url": url, "token": LS_TOKEN, "log": log}
    finally:
        support.stop_process(proc)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory, s3_server):
    """An MLflow tracking server with a SQLite backend and proxied artifacts in the moto S3."""
    s3_server["client"].create_bucket(Bucket="mlflow")
    env = {
        "MLFLOW_S3_ENDPOINT_URL": s3_server["endpoint"],
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with support.mlflow_server(
        tmp_path_factory.mktemp("mlflow"), artifacts_destination="s3://mlflow/artifacts", env=env, timeout=120
    ) as server:
        yield {"url": server.url, "log": server.log}


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
        proc = support.run_local_playbook(
            playbook,
            self.workdir,
            *(["--check"] if check else []),
            env={
                "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
                "ANSIBLE_LOCAL_TEMP": str(self.workdir / "ansible-tmp"),
            },
            timeout=600,
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
