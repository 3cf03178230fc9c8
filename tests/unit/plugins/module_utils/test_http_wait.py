"""Readiness polling against a real local HTTP server (plugins/module_utils/http_wait.py)."""

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from ansible_collections.ailab.platform.plugins.module_utils.http_wait import NotReadyError, wait_for_status


class Handler(BaseHTTPRequestHandler):
    calls = 0
    ready_after = 2

    def do_GET(self):
        type(self).calls += 1
        # Not ready for the first two calls, like a service that is still starting.
        code = 503 if type(self).calls <= type(self).ready_after else 200
        body = b"starting" if code == 503 else b'{"status": "UP"}'
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Handler.calls = 0
    Handler.ready_after = 2
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/health"
    httpd.shutdown()
    httpd.server_close()


def test_waits_until_the_status_is_answered(server):
    result = wait_for_status(server, timeout=10, interval=0.05, body_contains="UP")
    assert result["status"] == 200 and result["attempts"] == 3


def test_an_expected_error_status_counts_as_ready(server):
    assert wait_for_status(server, statuses=(503,), timeout=5, interval=0.05)["attempts"] == 1


def test_failure_names_the_url_and_the_last_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/health"
    with pytest.raises(NotReadyError) as caught:
        wait_for_status(url, timeout=1, interval=0.2)
    message = str(caught.value)
    assert url in message and "within 1 s" in message and "refused" in message.lower()


def test_failure_on_a_wrong_status_says_what_was_answered(server):
    Handler.ready_after = 1000
    with pytest.raises(NotReadyError, match="last error: HTTP 503 \\(expected 204\\)"):
        wait_for_status(server, statuses=(204,), timeout=0.3, interval=0.1)
