#!/usr/bin/python3
"""STAND-IN for the k3s binary, used only by the molecule/cluster and molecule/cluster_ha scenarios.

No kubelet, etcd or k3s can run in the test containers, so this script plays the parts of k3s the
roles depend on, over plain HTTP on the API port (no TLS, no Kubernetes API):
- `k3s --version` answers the version it was built for (prepare.yml writes it into VERSION);
- `k3s server` writes /etc/rancher/k3s/k3s.yaml like k3s does (mode from write-kubeconfig-mode,
  server https://127.0.0.1:6443) and listens on the API port. The first server (no `server` in
  config.yaml) keeps the cluster's member list: every joining server and agent presents the token
  and the server URL of its config.yaml, and a wrong token or a URL that does not name this server
  is refused (401/400, logged). A joined node becomes Ready (and a server a healthy etcd member)
  READY_DELAY seconds after it joined, and only while it keeps reporting in: like a real node, it
  is not usable the moment its port opens. Every join, refusal and health-gate question (with
  the answer given) is kept in an event log;
- `k3s server` with `server:` and `k3s agent` join that server as above, exit when refused, and
  report in every second;
- `k3s kubectl get --raw /readyz?verbose` and `k3s kubectl get node NAME -o jsonpath=...` (the
  health gates of the roles) answer from the first server's member list; `k3s kubectl drain NAME`
  and `uncordon NAME` (k3s_upgrade_drain) are only recorded there, as questions, with no pods to
  evict.
Paths come from config.yaml (K3S_CONFIG_FILE overrides it, as with k3s).
"""

import contextlib
import http.server
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

VERSION = "@K3S_VERSION@"
CONFIG = os.environ.get("K3S_CONFIG_FILE", "/etc/rancher/k3s/config.yaml")
KUBECONFIG = "/etc/rancher/k3s/k3s.yaml"
STATE = Path("/var/lib/rancher/k3s")
MEMBERS = STATE / "server" / "stand-in-members.json"
EVENTS = STATE / "server" / "stand-in-events.jsonl"
READY_DELAY = 4.0
REPORT_EVERY = 1.0
STALE_AFTER = 6.0
BOOT = time.time()

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


def node_name():
    return (config_value("node-name") or socket.gethostname()).lower()


def own_addresses():
    """Names and addresses a joiner may use for this server."""
    names = {socket.gethostname().lower(), "127.0.0.1", "localhost"}
    with contextlib.suppress(OSError):
        names.update(info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None))
    names.update((config_value("tls-san") or "").replace("[", "").replace("]", "").split())
    return names


class Cluster:
    """The first server's member list, kept on disk across restarts of the stand-in."""

    def __init__(self, token):
        self.token = token
        self.lock = threading.Lock()
        MEMBERS.parent.mkdir(parents=True, exist_ok=True)
        self.members = json.loads(MEMBERS.read_text()) if MEMBERS.exists() else {}

    def event(self, **fields):
        with EVENTS.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"t": time.time(), **fields}) + "\n")

    def join(self, request):
        """Check a join or report; return (HTTP status, message)."""
        name, role, boot = request.get("node"), request.get("role"), request.get("boot")
        if request.get("token") != self.token:
            self.event(event="refused", node=name, role=role, reason="token")
            return 401, f"node {name}: wrong token"
        url = urlsplit(request.get("server") or "")
        if url.scheme != "https" or (url.port or 443) != 6443 or url.hostname not in own_addresses():
            self.event(event="refused", node=name, role=role, reason="server", server=request.get("server"))
            return 400, f"node {name}: server URL {request.get('server')!r} does not name this server"
        with self.lock:
            member = self.members.get(name)
            if member is None or member["boot"] != boot:
                member = {"role": role, "boot": boot, "joined": time.time(), "server": request["server"]}
                member["version"] = request.get("version")
                self.members[name] = member
                self.event(event="joined", node=name, role=role, version=member["version"])
            member["seen"] = time.time()
            # Atomic: the verify playbooks read the file while nodes report in.
            MEMBERS.with_suffix(".tmp").write_text(json.dumps(self.members))
            MEMBERS.with_suffix(".tmp").replace(MEMBERS)
        return 200, "joined"

    def status(self):
        now = time.time()
        with self.lock:
            return {
                name: {
                    **member,
                    "ready": now - member["joined"] >= READY_DELAY and now - member["seen"] <= STALE_AFTER,
                }
                for name, member in self.members.items()
            }


def serve(cluster):
    class Handler(http.server.BaseHTTPRequestHandler):
        def reply(self, status, body):
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            if cluster is None or self.path != "/v1-k3s/stand-in/join":
                self.reply(404, "not the first server")
                return
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            self.reply(*cluster.join(request))

        def do_GET(self):
            url = urlsplit(self.path)
            if cluster is not None and url.path == "/v1-k3s/stand-in/members":
                status = cluster.status()
                # A health gate's question and the answer it got, for the verify playbooks.
                asked = dict(parse_qsl(url.query))
                if asked.get("about"):
                    answer = bool(status.get(asked["about"], {}).get("ready"))
                    cluster.event(event="asked", answer=answer, **asked)
                self.reply(200, json.dumps(status))
            else:
                self.reply(404, "not found")

        def log_message(self, *args):
            pass

    http.server.ThreadingHTTPServer(("", 6443), Handler).serve_forever()


def join_request(server_url, role):
    return {
        "node": node_name(),
        "role": role,
        "boot": BOOT,
        "token": config_value("token"),
        "server": server_url,
        "version": VERSION,
    }


def post_join(server_url, role):
    """POST the join to the server; return (status, text), status 0 when unreachable."""
    url = urlsplit(server_url)
    endpoint = f"http://{url.hostname}:{url.port or 6443}/v1-k3s/stand-in/join"
    body = json.dumps(join_request(server_url, role)).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(endpoint, data=body), timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def join_and_report(server_url, role):
    """Join the server (exit when refused), then report in every REPORT_EVERY seconds."""
    deadline = time.time() + 60
    while True:
        status, text = post_join(server_url, role)
        if status == 200:
            break
        if 400 <= status < 500:
            sys.exit(f"stand-in k3s {role}: {server_url} refused the join ({status}): {text}")
        if time.time() > deadline:
            sys.exit(f"stand-in k3s {role}: cannot reach {server_url}: {text}")
        time.sleep(REPORT_EVERY)
    print(f"stand-in k3s {VERSION} {role} {node_name()} joined {server_url}", flush=True)
    while True:
        time.sleep(REPORT_EVERY)
        status, text = post_join(server_url, role)
        if 400 <= status < 500:
            sys.exit(f"stand-in k3s {role}: {server_url} refused the report ({status}): {text}")


def server():
    (STATE / "server").mkdir(parents=True, exist_ok=True)
    mode = int(config_value("write-kubeconfig-mode") or "0600", 8)
    fd = os.open(KUBECONFIG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(KUBECONFIG_TEXT)
    Path(KUBECONFIG).chmod(mode)
    join_url = config_value("server")
    if join_url:
        threading.Thread(target=serve, args=(None,), daemon=True).start()
        join_and_report(join_url, "server")
        return
    cluster = Cluster(config_value("token"))
    threading.Thread(target=join_and_report, args=("https://127.0.0.1:6443", "server"), daemon=True).start()
    print(f"stand-in k3s {VERSION} server listening on :6443", flush=True)
    serve(cluster)


def agent():
    join_url = config_value("server")
    if not join_url:
        sys.exit("stand-in k3s agent: no server in config.yaml")
    (STATE / "agent").mkdir(parents=True, exist_ok=True)
    join_and_report(join_url, "agent")


def members(question, about):
    """The first server's member list, asked from this server (or the one it joined)."""
    url = urlsplit(config_value("server") or "https://127.0.0.1:6443")
    query = urlencode({"asker": node_name(), "question": question, "about": about})
    endpoint = f"http://{url.hostname}:{url.port or 6443}/v1-k3s/stand-in/members?{query}"
    with urllib.request.urlopen(endpoint, timeout=5) as answer:
        return json.loads(answer.read())


def kubectl(args):
    """The questions the roles ask: health gates, drain and uncordon (see the module docstring)."""
    if args[:2] == ["get", "--raw"] and len(args) >= 3 and args[2].startswith("/readyz"):
        question, about = "etcd", node_name()
    elif args[:2] == ["get", "node"] and len(args) >= 3:
        question, about = "node", args[2]
    elif args[:1] in (["drain"], ["uncordon"]) and len(args) >= 2:
        question, about = args[0], args[1]
    else:
        sys.exit(f"stand-in k3s kubectl: unsupported {' '.join(args)!r}")
    try:
        status = members(question, about)
    except OSError as exc:
        sys.exit(f"The connection to the server was refused: {exc}")
    if question == "etcd":
        member = status.get(node_name(), {})
        healthy = member.get("role") == "server" and member.get("ready")
        print("[+]ping ok")
        print(f"[{'+' if healthy else '-'}]etcd {'ok' if healthy else 'failed: not a healthy member yet'}")
        if not healthy:
            sys.exit("readyz check failed")
        print("readyz check passed")
    elif about not in status:
        sys.exit(f'Error from server (NotFound): nodes "{about}" not found')
    elif question in ("drain", "uncordon"):
        print(f"node/{about} {question}ed")
    else:
        print("True" if status[about]["ready"] else "False", end="")


def main():
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if Path(sys.argv[0]).name == "kubectl":
        kubectl(sys.argv[1:])
    elif command in ("--version", "-v", "version"):
        print(f"k3s version {VERSION} (stand-in)")
        print("go version go1.25 (stand-in)")
    elif command == "server":
        server()
    elif command == "agent":
        agent()
    elif command == "kubectl":
        kubectl(sys.argv[2:])
    else:
        sys.exit(f"stand-in k3s: unsupported command {command!r}")


if __name__ == "__main__":
    main()
