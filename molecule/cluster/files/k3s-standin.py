#!/usr/bin/python3
"""STAND-IN for the k3s binary, used only by the molecule/cluster scenario.

No kubelet or k3s can run in the test containers, so this script plays the parts of k3s the
roles depend on: `k3s --version` answers the version it was built for (prepare.yml writes it
into VERSION); `k3s server` writes /etc/rancher/k3s/k3s.yaml like k3s does (mode from
write-kubeconfig-mode, server https://127.0.0.1:6443) and listens on the API port; `k3s agent`
connects to the `server` URL of config.yaml and stays up only while it reaches it.
"""

import http.server
import os
import re
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

VERSION = "@K3S_VERSION@"
CONFIG = "/etc/rancher/k3s/config.yaml"
KUBECONFIG = "/etc/rancher/k3s/k3s.yaml"
STATE = Path("/var/lib/rancher/k3s")

KUBECONFIG_TEXT = """\
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: U1RBTkQtSU4gQ0E=
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: U1RBTkQtSU4gQ0VSVA==
    client-key-data: U1RBTkQtSU4gS0VZ
"""


def config_value(key):
    """Top-level scalar of config.yaml (enough for the keys the stand-in reads)."""
    with Path(CONFIG).open(encoding="utf-8") as handle:
        for line in handle:
            match = re.match(rf"^{re.escape(key)}:\s*'?\"?([^'\"\n]*)", line)
            if match:
                return match.group(1).strip()
    return None


def server():
    (STATE / "server").mkdir(parents=True, exist_ok=True)
    mode = int(config_value("write-kubeconfig-mode") or "0600", 8)
    fd = os.open(KUBECONFIG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(KUBECONFIG_TEXT)
    Path(KUBECONFIG).chmod(mode)
    print(f"stand-in k3s {VERSION} server listening on :6443", flush=True)
    http.server.HTTPServer(("", 6443), http.server.BaseHTTPRequestHandler).serve_forever()


def agent():
    url = urlsplit(config_value("server") or "")
    if not url.hostname:
        sys.exit("stand-in k3s agent: no server in config.yaml")
    (STATE / "agent").mkdir(parents=True, exist_ok=True)
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection((url.hostname, url.port or 6443), timeout=5).close()
            break
        except OSError as exc:
            if time.time() > deadline:
                sys.exit(f"stand-in k3s agent: cannot reach {url.geturl()}: {exc}")
            time.sleep(2)
    print(f"stand-in k3s {VERSION} agent joined {url.geturl()}", flush=True)
    while True:
        time.sleep(3600)


def main():
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command in ("--version", "-v", "version"):
        print(f"k3s version {VERSION} (stand-in)")
        print("go version go1.25 (stand-in)")
    elif command == "server":
        server()
    elif command == "agent":
        agent()
    else:
        sys.exit(f"stand-in k3s: unsupported command {command!r}")


if __name__ == "__main__":
    main()
