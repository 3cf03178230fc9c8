"""Real services for the integration tests, started as local processes on 127.0.0.1.

One place for what both test trees (``tests/`` and ``serving/tests/``) start: a free port, an HTTP
wait that shows the service's log when it fails, process start/stop by process group, and the
services themselves: ``moto_server`` (S3), ``mlflow_server`` and ``postgresql_server`` (a real
PostgreSQL cluster made with Debian's ``initdb``). Every service is a context manager that stops
its process on exit, so a fixture is ``with moto_server(tmp) as s3: yield s3``.

pytest finds this package through ``pythonpath`` in the root ``pyproject.toml``; scripts outside
pytest (``serving/bench/run.py``) put ``tests/support`` on ``sys.path`` themselves.
"""

from ailab_testsupport.ansible import run_local_playbook
from ailab_testsupport.postgresql import PostgresServer, postgresql_server
from ailab_testsupport.processes import (
    ServiceError,
    free_port,
    offline_env,
    start_process,
    stop_process,
    wait_http,
)
from ailab_testsupport.services import MlflowServer, MotoServer, mlflow_server, moto_server, venv_binary

__all__ = [
    "MlflowServer",
    "MotoServer",
    "PostgresServer",
    "ServiceError",
    "free_port",
    "mlflow_server",
    "moto_server",
    "offline_env",
    "postgresql_server",
    "run_local_playbook",
    "start_process",
    "stop_process",
    "venv_binary",
    "wait_http",
]
