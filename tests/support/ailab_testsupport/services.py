"""HTTP services for the tests: moto's S3 server and an MLflow tracking server."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ailab_testsupport.processes import (
    ServiceError,
    free_port,
    offline_env,
    start_process,
    stop_process,
    wait_http,
)


def venv_binary(name: str) -> Path:
    """``name`` beside this interpreter (the venv's scripts), else on PATH; ServiceError if neither."""
    path = Path(sys.executable).parent / name
    if path.exists():
        return path
    found = shutil.which(name)
    if not found:
        raise ServiceError(f"{name} is not installed: run make venv (requirements/dev.txt brings it)")
    return Path(found)


@dataclass
class MotoServer:
    """A running ``moto_server``: a real S3-compatible HTTP endpoint that accepts any keys."""

    endpoint: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    access_key: str
    secret_key: str
    region: str

    def client(self) -> Any:
        """A boto3 S3 client on this endpoint with this server's keys."""
        import boto3  # only the tests that use S3 pay for the import

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )


@contextmanager
def moto_server(
    workdir: Path,
    *,
    access_key: str = "testing",
    secret_key: str = "testing",
    region: str = "us-east-1",
    timeout: float = 60,
) -> Iterator[MotoServer]:
    """``moto_server`` on a free loopback port, its log in ``workdir``; stopped on exit."""
    port = free_port()
    log = workdir / "moto.log"
    proc = start_process(
        [str(venv_binary("moto_server")), "-H", "127.0.0.1", "-p", str(port)], log, cwd=workdir
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{endpoint}/moto-api/", proc, log, timeout, "moto_server")
        yield MotoServer(endpoint, port, proc, log, access_key, secret_key, region)
    finally:
        stop_process(proc)


@dataclass
class MlflowServer:
    """A running ``mlflow server``; call :meth:`wait` before the first request if not waited yet."""

    url: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    args: list[str]

    def wait(self, timeout: float = 180) -> str:
        """Block until ``/health`` answers; return the URL."""
        wait_http(f"{self.url}/health", self.proc, self.log, timeout, "MLflow")
        return self.url


@contextmanager
def mlflow_server(
    workdir: Path,
    *,
    backend_store_uri: str | None = None,
    artifacts_destination: str | None = None,
    allowed_hosts: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    workers: int = 1,
    wait: bool = True,
    timeout: float = 180,
) -> Iterator[MlflowServer]:
    """``mlflow server`` on a free loopback port, stopped on exit.

    Defaults: a SQLite backend and a proxied artifact store in ``workdir``. Give
    ``backend_store_uri`` (``postgresql://…`` needs psycopg2), ``artifacts_destination``
    (``s3://…`` with ``MLFLOW_S3_ENDPOINT_URL`` and keys in ``env``), ``allowed_hosts`` and
    ``extra_args`` to start it with the arguments a deployment renders. ``wait=False`` returns as
    soon as the process started (MLflow takes 30-40 s to create its database on a busy machine);
    call :meth:`MlflowServer.wait` later.
    """
    port = free_port()
    log = workdir / "mlflow.log"
    args = [
        "--backend-store-uri",
        backend_store_uri or f"sqlite:///{workdir / 'mlflow.db'}",
        "--artifacts-destination",
        artifacts_destination or str(workdir / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    if allowed_hosts:
        args += ["--allowed-hosts", ",".join(allowed_hosts)]
    args += list(extra_args)
    proc = start_process(
        [str(venv_binary("mlflow")), "server", *args], log, env=offline_env(env), cwd=workdir
    )
    server = MlflowServer(f"http://127.0.0.1:{port}", port, proc, log, args)
    try:
        if wait:
            server.wait(timeout)
        yield server
    finally:
        stop_process(proc)
