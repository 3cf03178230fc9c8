"""The test control plane: a real Kubernetes API on 127.0.0.1, with kwok simulating nodes and pods.

It starts etcd, kube-apiserver (client-certificate auth, RBAC, ServiceAccount token signing),
kube-controller-manager, kube-scheduler (all from the ``kubecp`` binary that ``build.sh`` makes) and
kwok, each in its own process group, on free loopback ports in a temporary directory, and stops
them all at the end. Nodes are fake (kwok marks them Ready and runs their pods); what kwok cannot
simulate is done by small stand-ins, named as such below:

* admission webhooks: the ``MutatingAdmissionWebhook``/``ValidatingAdmissionWebhook`` plugins are
  disabled, because no webhook server can run behind a fake pod (MetalLB's webhook fails closed);
  webhook configurations are still stored, so charts install as they would on a real cluster;
* LoadBalancer IPs: :class:`LoadBalancerStandIn` writes ``status.loadBalancer.ingress`` from the
  MetalLB ``IPAddressPool`` objects (or a fallback range), as MetalLB's controller would;
* PVC binding: :class:`VolumeStandIn` provisions a hostPath PV for each pending claim, as
  k3s's local-path provisioner would, and deletes it once released;
* pod logs: kwok's kubelet API serves every container's log from one file (a ``ClusterLogs``
  object in kwok's config), whose text :meth:`ControlPlane.pod_log` sets; ``kubectl logs`` goes
  through the API server to kwok as it would to a kubelet;
* a failing container: a pod annotated ``ailab.test/exit-code`` ends ``Failed`` with that exit
  code (a kwok stage in ``kwok-stages.yaml``) instead of ``Succeeded``.

Use it as a context manager (``with ControlPlane(...) as cp:``), from the pytest fixture in
``tests/integration/apply/conftest.py``, or from the command line (``up.sh``/``down.sh``)::

    python tests/kube/controlplane.py serve --state-dir DIR   # runs until SIGTERM
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
# build.sh's output; AILAB_KUBE_BIN_DIR points elsewhere (a CI cache, another checkout's build).
DEFAULT_BIN_DIR = Path(os.environ.get("AILAB_KUBE_BIN_DIR") or HERE / ".build" / "bin")
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "helm")
SERVICE_CIDR = "10.43.0.0/16"  # k3s's default service range
POD_CIDR = "10.42.0.1/16"  # k3s's default pod range; kwok hands pod IPs out of it
STANDIN_ANNOTATION = "ailab.test/stand-in"
# A pod with this annotation ends Failed with its value as exit code (kwok-stages.yaml).
EXIT_CODE_ANNOTATION = "ailab.test/exit-code"


class ControlPlaneError(RuntimeError):
    """A component did not start, or the API did not reach the wanted state in time."""


class BinariesMissingError(ControlPlaneError):
    """The binaries are not built: run ``make kube-build``."""


def missing_binaries(bin_dir: Path = DEFAULT_BIN_DIR) -> list[str]:
    """Return the names of the control-plane binaries that are not in ``bin_dir``."""
    return [name for name in BINARIES if not os.access(bin_dir / name, os.X_OK)]


# ---------------------------------------------------------------------------------------------
# Nodes


@dataclass(frozen=True)
class NodeSpec:
    """A fake node: what a kubelet would register (labels, taints, capacity)."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: Sequence[Mapping[str, str]] = ()
    capacity: Mapping[str, str] = field(default_factory=dict)
    control_plane: bool = False
    # What the node's kubelet reports; empty: "<API server version>+k3s1", as a k3s node of the
    # same release would (ControlPlane.add_node fills it in).
    kubelet_version: str = ""

    def manifest(self) -> dict[str, Any]:
        """Return the Node object, labelled as k3s labels its nodes."""
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": "k3s",
            "type": "kwok",
        }
        if self.control_plane:
            labels["node-role.kubernetes.io/control-plane"] = "true"
            labels["node-role.kubernetes.io/master"] = "true"
        labels.update(self.labels)
        capacity = {"cpu": "4", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"}
        capacity.update(self.capacity)
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": labels,
                "annotations": {"kwok.x-k8s.io/node": "fake"},
            },
            "spec": {"taints": [dict(t) for t in self.taints]} if self.taints else {},
            "status": {
                "capacity": capacity,
                "allocatable": capacity,
                "phase": "Pending",
                "nodeInfo": {
                    "kubeletVersion": self.kubelet_version,
                    "osImage": "Debian GNU/Linux 12 (bookworm)",
                },
            },
        }


# ---------------------------------------------------------------------------------------------
# PKI: one CA, the API server's serving certificate, client certificates, the SA signing key.


def _key() -> ec.EllipticCurvePrivateKey:
    # ECDSA P-256: Kubernetes accepts it everywhere, and it is generated in microseconds (RSA-2048
    # takes ~100 ms per key, which adds up on a 2-core CI machine).
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Pki:
    """Certificates and keys written under ``directory``; paths are attributes."""

    directory: Path

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._ca_key = _key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ailab-test-ca")])
        self._ca_cert = (
            self._builder(name, self._ca_key, issuer=name)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._ca_key, hashes.SHA256())
        )
        self.ca_cert = self._write("ca.crt", _pem_cert(self._ca_cert))
        service_ip = next(ipaddress.ip_network(SERVICE_CIDR).hosts())
        self.server_cert, self.server_key = self.issue(
            "apiserver",
            "kube-apiserver",
            dns=[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            ips=["127.0.0.1", str(service_ip)],
        )
        self.proxy_cert, self.proxy_key = self.issue("front-proxy-client", "front-proxy-client")
        sa_key = _key()
        self.sa_key = self._write("sa.key", _pem_key(sa_key))
        self.sa_pub = self._write(
            "sa.pub",
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )

    @staticmethod
    def _builder(
        subject: x509.Name, key: ec.EllipticCurvePrivateKey, *, issuer: x509.Name
    ) -> x509.CertificateBuilder:
        now = dt.datetime.now(dt.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
        )

    def _write(self, name: str, data: bytes) -> Path:
        path = self.directory / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    def issue(
        self,
        stem: str,
        common_name: str,
        *,
        groups: Iterable[str] = (),
        dns: Iterable[str] = (),
        ips: Iterable[str] = (),
    ) -> tuple[Path, Path]:
        """Issue a certificate (client when no SANs, else server) and return (cert, key) paths."""
        key = _key()
        subject = x509.Name(
            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
            + [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        usage = x509.ExtendedKeyUsageOID.SERVER_AUTH if sans else x509.ExtendedKeyUsageOID.CLIENT_AUTH
        builder = self._builder(subject, key, issuer=self._ca_cert.subject).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._ca_key, hashes.SHA256())
        return self._write(f"{stem}.crt", _pem_cert(cert)), self._write(f"{stem}.key", _pem_key(key))


def write_kubeconfig(path: Path, server: str, *, ca: Path, cert: Path, key: Path, user: str) -> Path:
    """Write a self-contained kubeconfig (certificates inlined) and return its path."""

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "ailab-test", "cluster": {"server": server, "certificate-authority-data": b64(ca)}}
        ],
        "users": [
            {"name": user, "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}
        ],
        "contexts": [{"name": "ailab-test", "context": {"cluster": "ailab-test", "user": user}}],
        "current-context": "ailab-test",
    }
    # JSON is YAML: kubectl, helm and the kubernetes client all read it.
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


# ---------------------------------------------------------------------------------------------
# A minimal API client: the launcher must not depend on the kubernetes Python package.


class Api:
    """JSON over HTTPS to the API server with a client certificate."""

    def __init__(self, server: str, ca: Path, cert: Path, key: Path) -> None:
        self.server = server
        self._ctx = ssl.create_default_context(cafile=str(ca))
        self._ctx.load_cert_chain(str(cert), str(key))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 10,
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, context=self._ctx, timeout=timeout) as resp:
            raw = resp.read()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode()

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def exists(self, path: str) -> bool:
        try:
            self.get(path)
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return False
            raise
        return True

    def create(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)

    def merge_patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body, "application/merge-patch+json")

    def delete(self, path: str) -> None:
        with contextlib.suppress(urllib.error.HTTPError):
            self.request("DELETE", path)


def wait_for(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.25) -> None:
    """Poll ``check`` until it returns true; raise naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, urllib.error.URLError, ssl.SSLError, ValueError) as err:
            last = err
        time.sleep(interval)
    raise ControlPlaneError(
        f"timed out after {timeout:.0f} s waiting for {what}" + (f": {last}" if last else "")
    )


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# Stand-ins


def _address_range(spec: str) -> Iterator[str]:
    """Expand ``a.b.c.d-e.f.g.h`` or a CIDR (MetalLB's address syntax) into addresses."""
    if "-" in spec:
        first, last = (ipaddress.ip_address(p.strip()) for p in spec.split("-", 1))
        for n in range(int(first), int(last) + 1):
            yield str(ipaddress.ip_address(n))
    else:
        net = ipaddress.ip_network(spec.strip(), strict=False)
        yield from (str(a) for a in (net.hosts() if net.num_addresses > 2 else net))


class StandIn(threading.Thread):
    """A polling loop that does one job a real cluster component would do."""

    interval = 0.5

    def __init__(self, api: Api) -> None:
        super().__init__(name=type(self).__name__, daemon=True)
        self.api = api
        self._stop_event = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.step()
            except (OSError, urllib.error.URLError, ValueError, KeyError) as err:
                # The API may be briefly unavailable; keep the last errors for diagnosis only.
                self.errors = [*self.errors[-9:], repr(err)]
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def step(self) -> None:
        raise NotImplementedError


class LoadBalancerStandIn(StandIn):
    """Stand-in for MetalLB's controller: give each LoadBalancer Service an ingress IP.

    Addresses come from the ``metallb.io/v1beta1`` IPAddressPools when any exist (so a test sees
    what the pool the role created hands out), else from ``fallback_range`` when one is given
    (``kube-up``; the integration tests give none, so without a pool no address is assigned);
    ``metallb.io/loadBalancerIPs`` pins an address, as in MetalLB.
    """

    def __init__(self, api: Api, fallback_range: str | None) -> None:
        super().__init__(api)
        self.fallback_range = fallback_range

    def _pool(self) -> list[str]:
        ranges: list[str] = []
        with contextlib.suppress(urllib.error.HTTPError):  # 404 until MetalLB's CRDs exist
            for pool in self.api.get("/apis/metallb.io/v1beta1/ipaddresspools").get("items", []):
                ranges += pool.get("spec", {}).get("addresses", [])
        if not ranges and self.fallback_range:
            ranges = [self.fallback_range]
        return [a for r in ranges for a in _address_range(r)]

    def step(self) -> None:
        services = self.api.get("/api/v1/services")["items"]
        lbs = [s for s in services if s["spec"].get("type") == "LoadBalancer"]
        pending = [s for s in lbs if not s.get("status", {}).get("loadBalancer", {}).get("ingress")]
        if not pending:
            return
        used = {
            i.get("ip") for s in lbs for i in s.get("status", {}).get("loadBalancer", {}).get("ingress", [])
        }
        free = [a for a in self._pool() if a not in used]
        for svc in pending:
            meta = svc["metadata"]
            wanted = meta.get("annotations", {}).get("metallb.io/loadBalancerIPs")
            ip = wanted.split(",")[0].strip() if wanted else (free.pop(0) if free else None)
            if ip is None:
                continue  # pool exhausted: the Service stays pending, as with MetalLB
            self.api.merge_patch(
                f"/api/v1/namespaces/{meta['namespace']}/services/{meta['name']}/status",
                {"status": {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}},
            )


class VolumeStandIn(StandIn):
    """Stand-in for a dynamic provisioner (k3s's local-path): a PV for each pending claim.

    Immediate-binding claims are provisioned at once; WaitForFirstConsumer claims once the
    scheduler picked a node (``volume.kubernetes.io/selected-node``). The PV is pre-bound to the
    claim, so the real PV controller completes the binding; released PVs are deleted.
    """

    def __init__(self, api: Api, pv_root: Path) -> None:
        super().__init__(api)
        self.pv_root = pv_root

    def step(self) -> None:
        items = self.api.get("/apis/storage.k8s.io/v1/storageclasses")["items"]
        classes = {c["metadata"]["name"]: c for c in items}
        default_key = "storageclass.kubernetes.io/is-default-class"
        defaults = [
            n for n, c in classes.items() if c["metadata"].get("annotations", {}).get(default_key) == "true"
        ]
        default = defaults[0] if defaults else None
        for pvc in self.api.get("/api/v1/persistentvolumeclaims")["items"]:
            meta, spec = pvc["metadata"], pvc["spec"]
            if pvc.get("status", {}).get("phase") != "Pending" or spec.get("volumeName"):
                continue
            sc = classes.get(spec.get("storageClassName") or default or "")
            if sc is None:
                continue
            annotations = meta.get("annotations", {})
            if sc.get("volumeBindingMode") == "WaitForFirstConsumer" and not annotations.get(
                "volume.kubernetes.io/selected-node"
            ):
                continue
            self._provision(pvc, sc)
        for pv in self.api.get("/api/v1/persistentvolumes")["items"]:
            if STANDIN_ANNOTATION in pv["metadata"].get("annotations", {}) and pv.get("status", {}).get(
                "phase"
            ) in ("Released", "Failed"):
                self.api.delete(f"/api/v1/persistentvolumes/{pv['metadata']['name']}")

    def _provision(self, pvc: dict[str, Any], sc: dict[str, Any]) -> None:
        meta, spec = pvc["metadata"], pvc["spec"]
        name = f"pvc-{meta['uid']}"
        path = self.pv_root / name
        path.mkdir(parents=True, exist_ok=True)
        pv: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": name,
                "annotations": {
                    "pv.kubernetes.io/provisioned-by": sc.get("provisioner", ""),
                    STANDIN_ANNOTATION: "VolumeStandIn",
                },
            },
            "spec": {
                "capacity": {"storage": spec.get("resources", {}).get("requests", {}).get("storage", "1Gi")},
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": sc["metadata"]["name"],
                "volumeMode": spec.get("volumeMode", "Filesystem"),
                "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        node = meta.get("annotations", {}).get("volume.kubernetes.io/selected-node")
        if node:
            term = {
                "matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]
            }
            pv["spec"]["nodeAffinity"] = {"required": {"nodeSelectorTerms": [term]}}
        try:
            self.api.create("/api/v1/persistentvolumes", pv)
        except urllib.error.HTTPError as err:
            if err.code != 409:  # already provisioned on an earlier pass
                raise


# ---------------------------------------------------------------------------------------------
# The control plane


KWOK_STAGES = HERE / "kwok-stages.yaml"


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


class ControlPlane:
    """etcd + kube-apiserver + controller-manager + scheduler + kwok (+ stand-ins) on 127.0.0.1."""

    def __init__(
        self,
        nodes: Iterable[NodeSpec] = (),
        *,
        bin_dir: Path = DEFAULT_BIN_DIR,
        workdir: Path | None = None,
        loadbalancer_range: str | None = None,
        storage_class: str | None = "local-path",
        start_timeout: float = 120,
    ) -> None:
        self.bin_dir = Path(bin_dir)
        self._initial_nodes = list(nodes)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="ailab-kube-"))
        self.loadbalancer_range = loadbalancer_range
        self.storage_class = storage_class
        self.start_timeout = start_timeout
        self._processes: list[_Process] = []
        self._standins: list[StandIn] = []
        self.server = ""
        self.kubeconfig = ""
        self.api: Api | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start every component and the initial nodes; return once all are ready."""
        missing = missing_binaries(self.bin_dir)
        if missing:
            raise BinariesMissingError(
                f"test control plane binaries missing in {self.bin_dir}: {', '.join(missing)}; "
                "run make kube-build"
            )
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        pki = Pki(self.workdir / "pki")
        self._start_etcd()
        api_port = free_port()
        self.server = f"https://127.0.0.1:{api_port}"
        self._start_apiserver(pki, api_port)
        admin_cert, admin_key = pki.issue("admin", "ailab-admin", groups=["system:masters"])
        self.kubeconfig = str(
            write_kubeconfig(
                self.workdir / "admin.kubeconfig",
                self.server,
                ca=pki.ca_cert,
                cert=admin_cert,
                key=admin_key,
                user="ailab-admin",
            )
        )
        self.api = Api(self.server, pki.ca_cert, admin_cert, admin_key)
        wait_for("kube-apiserver /readyz", lambda: self._get_text("/readyz") == "ok", self.start_timeout)
        self._start_controller_manager(pki)
        self._start_scheduler(pki)
        self._start_kwok(self._write_log_config())
        if self.storage_class:
            self._create_storage_class(self.storage_class)
        self._standins = [
            LoadBalancerStandIn(self.api, self.loadbalancer_range),
            VolumeStandIn(self.api, self.workdir / "volumes"),
        ]
        for standin in self._standins:
            standin.start()
        # The service-account controller creates "default" in each namespace; pods need it.
        wait_for(
            "the default ServiceAccount (kube-controller-manager)",
            lambda: self._require_api().exists("/api/v1/namespaces/default/serviceaccounts/default"),
            self.start_timeout,
        )
        for spec in self._initial_nodes:
            self.add_node(spec, wait=False)
        self.wait_nodes_ready(spec.name for spec in self._initial_nodes)

    def stop(self) -> None:
        """Stop the stand-ins and every process group (SIGTERM, then SIGKILL); remove the workdir."""
        for standin in self._standins:
            standin.stop()
        self._standins = []
        # Reverse order: clients before the API server, the API server before etcd.
        for proc in reversed(self._processes):
            _terminate(proc.popen)
        self._processes = []
        if self._own_workdir and not os.environ.get("AILAB_KUBE_KEEP"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def env(self) -> dict[str, str]:
        """Return os.environ with KUBECONFIG set and the bin dir (helm, kubectl) first on PATH."""
        env = dict(os.environ)
        env["KUBECONFIG"] = self.kubeconfig
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    # -- nodes --------------------------------------------------------------------------------

    @property
    def nodes(self) -> list[str]:
        """Names of the Node objects the API holds now (a playbook may have deleted some)."""
        return [n["metadata"]["name"] for n in self._require_api().get("/api/v1/nodes")["items"]]

    def add_node(self, spec: NodeSpec, *, wait: bool = True, timeout: float = 60) -> None:
        """Register a fake node (kwok makes it Ready); wait for Ready unless ``wait`` is false."""
        api = self._require_api()
        if not spec.kubelet_version:
            spec = dataclasses.replace(spec, kubelet_version=f"{api.get('/version')['gitVersion']}+k3s1")
        api.create("/api/v1/nodes", spec.manifest())
        if wait:
            self.wait_nodes_ready([spec.name], timeout)

    def remove_node(self, name: str, *, timeout: float = 60) -> None:
        """Delete a node, as a removed host's Node object would be, and wait until it is gone."""
        api = self._require_api()
        api.delete(f"/api/v1/nodes/{name}")
        wait_for(f"node {name} to be deleted", lambda: not api.exists(f"/api/v1/nodes/{name}"), timeout)

    def wait_nodes_ready(self, names: Iterable[str], timeout: float = 60) -> None:
        api = self._require_api()
        for name in names:
            path = f"/api/v1/nodes/{name}"
            wait_for(f"node {name} Ready (kwok)", lambda p=path: _node_ready(api.get(p)), timeout)

    # -- components ---------------------------------------------------------------------------

    def _spawn(self, name: str, args: Sequence[str]) -> _Process:
        log = self.workdir / "logs" / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [str(self.bin_dir / name), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,  # own process group: stop() kills it and its children
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads exist before the stand-ins
            )
        proc = _Process(name, popen, log)
        self._processes.append(proc)
        return proc

    def _expect_running(self, proc: _Process) -> Callable[[], bool]:
        def check() -> bool:
            if proc.popen.poll() is not None:
                tail = proc.log.read_text(errors="replace")[-3000:]
                raise ControlPlaneError(f"{proc.name} exited with {proc.popen.returncode}; log tail:\n{tail}")
            return True

        return check

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        proc = self._spawn(
            "etcd",
            [
                "--name=ailab-test",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=ailab-test=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",  # test data: durability buys nothing, fsync costs seconds
                "--log-level=warn",
            ],
        )
        alive = self._expect_running(proc)

        def healthy() -> bool:
            alive()
            with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as resp:
                return json.loads(resp.read()).get("health") == "true"

        wait_for("etcd /health", healthy, self.start_timeout)

    def _start_apiserver(self, pki: Pki, port: int) -> None:
        proc = self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--tls-cert-file={pki.server_cert}",
                f"--tls-private-key-file={pki.server_key}",
                f"--client-ca-file={pki.ca_cert}",
                "--authorization-mode=RBAC",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # Front-proxy (aggregation layer) identity, as kubeadm/k3s set it: aggregated APIs
                # such as metrics-server work, and controllers stop logging a missing CA bundle.
                f"--requestheader-client-ca-file={pki.ca_cert}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki.proxy_cert}",
                f"--proxy-client-key-file={pki.proxy_key}",
                "--allow-privileged=true",
                # Stand-in for webhook servers: none can run behind kwok's fake pods, and MetalLB's
                # validating webhook fails closed, so the webhook admission plugins are off.
                "--disable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
                # kwok registers a node's name as its Hostname address, which does not resolve:
                # reach its kubelet API (pod logs) on the InternalIP, 127.0.0.1.
                "--kubelet-preferred-address-types=InternalIP",
                # The endpoint reconciler refuses a loopback address for the kubernetes Service.
                "--endpoint-reconciler-type=none",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._apiserver = proc

    def _component_kubeconfig(self, pki: Pki, stem: str, user: str) -> Path:
        cert, key = pki.issue(stem, user)
        path = self.workdir / f"{stem}.kubeconfig"
        return write_kubeconfig(path, self.server, ca=pki.ca_cert, cert=cert, key=key, user=user)

    def _component_flags(self, stem: str, kubeconfig: Path, port: int) -> list[str]:
        """Flags the controller-manager and the scheduler share: one kubeconfig, loopback, one replica."""
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.workdir / f'{stem}-certs'}",
            "--leader-elect=false",
        ]

    def _start_controller_manager(self, pki: Pki) -> None:
        kubeconfig = self._component_kubeconfig(pki, "controller-manager", "system:kube-controller-manager")
        port = free_port()
        proc = self._spawn(
            "kube-controller-manager",
            [
                *self._component_flags("controller-manager", kubeconfig, port),
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_cert}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--v=1",
            ],
        )
        self._wait_healthz(proc, port)

    def _start_scheduler(self, pki: Pki) -> None:
        kubeconfig = self._component_kubeconfig(pki, "scheduler", "system:kube-scheduler")
        port = free_port()
        proc = self._spawn(
            "kube-scheduler",
            [*self._component_flags("scheduler", kubeconfig, port), "--v=1"],
        )
        self._wait_healthz(proc, port)

    @property
    def _pod_log_file(self) -> Path:
        return self.workdir / "pod-logs" / "containers.log"

    def _write_log_config(self) -> Path:
        """Write kwok's ClusterLogs config: every container's log is ``_pod_log_file``."""
        self._pod_log_file.parent.mkdir(parents=True, exist_ok=True)
        self._pod_log_file.write_text("")
        config = {
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "ClusterLogs",
            "metadata": {"name": "container-logs"},
            # No selector and no container names: this log serves every container of every pod.
            "spec": {"logs": [{"logsFile": str(self._pod_log_file)}]},
        }
        path = self.workdir / "kwok-logs.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        return path

    @contextmanager
    def pod_log(self, text: str) -> Iterator[None]:
        """Serve ``text`` as the log of every container (``kubectl logs``) until the block ends.

        kwok reads the file at each request, in the CRI log format a kubelet reads from
        containerd; the log is empty again afterwards.
        """
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
        lines = [f"{stamp} stdout F {line}\n" for line in text.splitlines()]
        self._pod_log_file.write_text("".join(lines))
        try:
            yield
        finally:
            self._pod_log_file.write_text("")

    def _start_kwok(self, log_config: Path) -> None:
        port = free_port()
        self._spawn(
            "kwok",
            [
                f"--kubeconfig={self.kubeconfig}",
                f"--config={KWOK_STAGES}",
                f"--config={log_config}",
                "--manage-all-nodes=true",
                # kwok renews each node's Lease, so the node lifecycle controller keeps them Ready.
                "--node-lease-duration-seconds=40",
                f"--cidr={POD_CIDR}",
                "--node-ip=127.0.0.1",
                f"--node-port={port}",
                f"--server-address=127.0.0.1:{port}",  # its default listens on every interface
            ],
        )

    def _wait_healthz(self, proc: _Process, port: int) -> None:
        alive = self._expect_running(proc)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the component's self-signed serving cert; loopback only

        def healthy() -> bool:
            alive()
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=ctx, timeout=2) as resp:
                return bool(resp.read() == b"ok")

        wait_for(f"{proc.name} /healthz", healthy, self.start_timeout)

    def _create_storage_class(self, name: str) -> None:
        # What k3s ships: the default StorageClass of its local-path provisioner.
        self._require_api().create(
            "/apis/storage.k8s.io/v1/storageclasses",
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {
                    "name": name,
                    "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                },
                "provisioner": "rancher.io/local-path",
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "WaitForFirstConsumer",
            },
        )

    def _get_text(self, path: str) -> str:
        self._expect_running(self._apiserver)()
        return str(self._require_api().get(path))

    def _require_api(self) -> Api:
        if self.api is None:
            raise ControlPlaneError("the control plane is not started")
        return self.api


def _node_ready(node: Mapping[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _die_with_parent() -> None:
    """In the child: get SIGKILL if the launcher dies, so a killed test run leaves nothing behind."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _terminate(popen: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout)
    # Kill the whole group even when the leader exited: a child may be left in it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(5)


# ---------------------------------------------------------------------------------------------
# Command line (up.sh / down.sh)


def lab_nodes() -> list[NodeSpec]:
    """The 3-node lab the tests use: one server, a CPU agent and a GPU agent (2 GPUs)."""
    return [
        NodeSpec("lab-server", control_plane=True),
        NodeSpec("lab-cpu-1"),
        NodeSpec(
            "lab-gpu-1",
            labels={"nvidia.com/gpu.present": "true"},
            capacity={"nvidia.com/gpu": "2"},
        ),
    ]


def _serve(args: argparse.Namespace) -> int:
    state = Path(args.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    control_plane = ControlPlane(
        lab_nodes(),
        workdir=state / "run",
        loadbalancer_range=args.loadbalancer_range,
        bin_dir=Path(args.bin_dir),
    )
    with control_plane as cp:
        shutil.copyfile(cp.kubeconfig, state / "kubeconfig")
        (state / "kubeconfig").chmod(0o600)
        (state / "ready").write_text(json.dumps({"server": cp.server, "nodes": cp.nodes, "pid": os.getpid()}))
        stopping.wait()
    (state / "ready").unlink(missing_ok=True)
    shutil.rmtree(state / "run", ignore_errors=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the 3-node lab control plane and run until SIGTERM")
    serve.add_argument("--state-dir", required=True, help="where kubeconfig, ready and run/ go")
    serve.add_argument("--loadbalancer-range", default="198.51.100.240-198.51.100.250")
    serve.add_argument("--bin-dir", default=str(DEFAULT_BIN_DIR))
    args = parser.parse_args(argv)
    try:
        return _serve(args)
    except ControlPlaneError as err:
        print(f"controlplane: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
