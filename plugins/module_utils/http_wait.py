# Copyright: ailab maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Poll an HTTP endpoint until it answers an expected status, within a bounded time."""

from __future__ import annotations

import time
from urllib.error import HTTPError, URLError

from ansible.module_utils.urls import open_url


class NotReadyError(Exception):
    """The endpoint did not become ready in time; the message carries the last error."""


def probe(url: str, method: str = "GET", headers=None, validate_certs: bool = True, *, timeout: float = 10):
    """One request: ``(status, body)``; connection failures raise OSError/URLError."""
    try:
        response = open_url(
            url,
            method=method,
            headers=headers or {},
            timeout=timeout,
            validate_certs=validate_certs,
            follow_redirects="none",
        )
        return response.status, response.read()
    except HTTPError as exc:  # 3xx (redirects are not followed), 4xx and 5xx are answers too
        try:
            body = exc.read()
        except Exception:  # the body of an error answer is optional
            body = b""
        return exc.code, body


def wait_for_status(
    url: str,
    *,
    statuses=(200,),
    timeout: float = 300,
    interval: float = 2,
    method: str = "GET",
    headers=None,
    validate_certs: bool = True,
    request_timeout: float = 10,
    body_contains: str | None = None,
    clock=time.monotonic,
    sleep=time.sleep,
) -> dict:
    """Return ``{"status", "elapsed", "attempts"}`` once ``url`` answers one of ``statuses``
    (and its body contains ``body_contains``), or raise NotReadyError with the last error."""
    start = clock()
    attempts = 0
    last_error = "no attempt made"
    while True:
        attempts += 1
        try:
            remaining = max(1.0, timeout - (clock() - start))
            status, body = probe(
                url, method, headers, validate_certs, timeout=min(request_timeout, remaining)
            )
            if status in statuses:
                if body_contains is None or body_contains in body.decode("utf-8", "replace"):
                    return {"status": status, "elapsed": round(clock() - start, 3), "attempts": attempts}
                last_error = "HTTP %d without %r in the body" % (status, body_contains)
            else:
                last_error = "HTTP %d (expected %s)" % (status, ", ".join(str(s) for s in statuses))
        except URLError as exc:
            last_error = str(exc.reason)
        except OSError as exc:  # timeouts, resets
            last_error = str(exc) or exc.__class__.__name__
        elapsed = clock() - start
        if elapsed + interval > timeout:
            raise NotReadyError(
                "%s did not answer %s within %g s (%d attempts); last error: %s"
                % (url, "/".join(str(s) for s in statuses), timeout, attempts, last_error)
            )
        sleep(interval)
