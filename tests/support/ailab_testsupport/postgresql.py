"""A real PostgreSQL server for the tests: a throw-away cluster made with the system's ``initdb``.

Debian's ``postgresql`` package (``apt-get install postgresql``; ``.ci/run`` installs it) puts the
server binaries in ``/usr/lib/postgresql/<major>/bin``. ``initdb`` and the server refuse to run as
root, so as root they run as the ``postgres`` system user (which the package creates) with
``runuser``, in a directory of their own under the system temp dir (pytest's temp dirs are private
to root). The server listens on 127.0.0.1 on a free port with scram-sha-256 password auth; the unix
socket, in the cluster's private directory, trusts local users (only the owner and root reach it).
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ailab_testsupport.processes import ServiceError, free_port, log_tail

SERVER_USER = "postgres"  # the OS user that runs the server as root, and the superuser's name
INSTALL_HINT = "install Debian's PostgreSQL server: apt-get install postgresql (see .ci/run)"


def postgresql_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<major>/bin`` (``AILAB_PG_BIN_DIR`` overrides), or PATH's."""
    override = os.environ.get("AILAB_PG_BIN_DIR")
    if override:
        return Path(override)
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise ServiceError(f"PostgreSQL's initdb was not found: {INSTALL_HINT}")


@dataclass
class PostgresServer:
    """A running PostgreSQL cluster: where it listens, its superuser and a ``psql`` helper."""

    host: str
    port: int
    user: str
    password: str
    socket_dir: Path
    bin_dir: Path
    log: Path
    version: str = field(default="")

    def uri(self, database: str = "postgres", user: str | None = None, password: str | None = None) -> str:
        """A ``postgresql://`` URI over TCP (the superuser's unless ``user``/``password`` given)."""
        return (
            f"postgresql://{user or self.user}:{password if password is not None else self.password}"
            f"@{self.host}:{self.port}/{database}"
        )

    def psql(
        self,
        sql: str | None = None,
        *,
        file: Path | None = None,
        database: str = "postgres",
        user: str | None = None,
        password: str | None = None,
        variables: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``psql`` over TCP with ``ON_ERROR_STOP`` on ``sql`` or ``file``; stdout holds only rows.

        Connects as the superuser unless ``user`` and ``password`` are given. With ``check`` a
        failure raises ServiceError carrying psql's output.
        """
        cmd = [
            str(self.bin_dir / "psql"),
            "--no-psqlrc",
            "--quiet",
            "--tuples-only",
            "--no-align",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            user or self.user,
            "-d",
            database,
        ]
        for name, value in (variables or {}).items():
            cmd += ["-v", f"{name}={value}"]
        if sql is not None:
            cmd += ["-c", sql]
        if file is not None:
            cmd += ["-f", str(file)]
        cmd += list(args)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGPASSWORD"] = password if password is not None else self.password
        env["PGCONNECT_TIMEOUT"] = "10"
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
        if check and proc.returncode != 0:
            output = f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
            raise ServiceError(f"psql exited {proc.returncode}:\n{output}")
        return proc


def _as_server_user(cmd: list[str]) -> list[str]:
    """Run ``cmd`` as the postgres OS user when we are root (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", SERVER_USER, "--", *cmd]


def _run(cmd: list[str], what: str, log: Path | None = None, timeout: float = 120) -> str:
    proc = subprocess.run(_as_server_user(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise ServiceError(
            f"{what} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}\n{log_tail(log)}"
        )
    return proc.stdout


@contextmanager
def postgresql_server(
    workdir: Path,
    *,
    password: str | None = None,
    settings: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> Iterator[PostgresServer]:
    """A fresh PostgreSQL cluster on 127.0.0.1 (free port), superuser ``postgres`` with a password.

    The cluster lives in a private temp dir (removed on exit); its server log is copied to
    ``workdir/postgresql.log`` on exit. ``settings`` adds ``-c name=value`` server settings.
    """
    bin_dir = postgresql_bin_dir()
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise ServiceError(f"running as root needs the {SERVER_USER} OS user: {INSTALL_HINT}") from None
    password = password or secrets.token_urlsafe(24)
    # Short (a unix socket path has a ~107-byte limit) and outside pytest's root-only temp tree.
    root = Path(tempfile.mkdtemp(prefix="ailab-pg-"))
    data, log, pwfile = root / "data", root / "postgresql.log", root / "pwfile"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        for path in (root, pwfile):
            os.chown(path, account.pw_uid, account.pw_gid)
    port = free_port()
    options = {
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        "unix_socket_directories": str(root),
        "password_encryption": "scram-sha-256",
        # A test database: durability is not wanted, speed is.
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        **(settings or {}),
    }
    try:
        _run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                SERVER_USER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            "initdb",
        )
        pwfile.unlink()
        server_options = " ".join(f"-c {name}={value}" for name, value in options.items())
        _run(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-o",
                server_options,
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ],
            "pg_ctl start",
            log,
            timeout=timeout + 30,
        )
        server = PostgresServer("127.0.0.1", port, SERVER_USER, password, root, bin_dir, log)
        match = re.search(r"PostgreSQL (\S+)", server.psql("SELECT version()").stdout)
        server.version = match.group(1) if match else ""
        try:
            yield server
        finally:
            _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], "pg_ctl stop", log)
    finally:
        if log.exists():
            workdir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log, workdir / "postgresql.log")
        shutil.rmtree(root, ignore_errors=True)
