"""Ports, processes and readiness: the plumbing under every service the tests start."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

# No process started by the tests talks to anything but 127.0.0.1.
OFFLINE_ENV = {
    "YOLO_OFFLINE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "COLLECT_ANALYTICS": "false",
    "LATEST_VERSION_CHECK": "false",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")


class ServiceError(RuntimeError):
    """A service did not start or answer; the message carries the tail of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def offline_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ without proxies, with the telemetry switches off, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARIABLES}
    env.update(OFFLINE_ENV)
    env.update(extra or {})
    return env


def log_tail(log: Path | None, chars: int = 3000) -> str:
    if log is None or not log.exists():
        return ""
    return log.read_text(errors="replace")[-chars:]


def wait_http(
    url: str,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
    timeout: float = 60,
    what: str = "the service",
) -> None:
    """Poll ``url`` until it answers 200; raise ServiceError with the log's tail otherwise.

    Fails at once when ``proc`` exits first. Proxies are bypassed (the URL is on 127.0.0.1).
    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(
                f"{what} exited with {proc.returncode} before {url} answered:\n{log_tail(log)}"
            )
        try:
            with opener.open(url, timeout=5) as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.25)
    raise ServiceError(f"{what} did not answer {url} in {timeout} s ({last}):\n{log_tail(log)}")


def start_process(
    cmd: Sequence[str],
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` with stdout and stderr in ``log``, in a session (process group) of its own.

    Its own group, so :func:`stop_process` also stops the workers it forks (gunicorn, uvicorn).
    ``env`` defaults to :func:`offline_env`.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        return subprocess.Popen(
            list(cmd),
            env=dict(env) if env is not None else offline_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM (to its process group when it leads one), then SIGKILL after ``timeout`` s."""
    if proc.poll() is not None:
        return
    try:
        group = os.getpgid(proc.pid) == proc.pid
    except ProcessLookupError:
        return

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)

    send(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait(10)
