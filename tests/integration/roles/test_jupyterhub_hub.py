"""The real JupyterHub, started as the jupyterhub role's rendered hub Deployment starts it.

The chart (../shared/charts/jupyterhub) is rendered with the values ``roles/jupyterhub/tasks/values.yml``
computes (GPU profiles on). The hub's files are the rendered objects' own, written where the
Deployment mounts them: ``jupyterhub_config.py`` and ``z2jh.py`` (ConfigMap), ``config/`` (the
ConfigMap's names), ``secret/`` (the chart's Secret: values.yaml, cookie secret, proxy token), and
the hub runs with the container's environment (Secrets resolved: the chart's, and the role's admin
Secret with a test password). Real packages: jupyterhub 5.5.0, jupyterhub-kubespawner,
jupyterhub-nativeauthenticator, jupyterhub-idle-culler (PyPI) and configurable-http-proxy 4.6.3
(npm, ``make chp``; the chart's image has 5.2.0, which needs Node 20 where Debian 12 has 18: the
REST API the hub calls is the same).

Replaced, because they name the cluster or the container: the mount root /usr/local/etc/jupyterhub
(a temp dir; in z2jh.py and jupyterhub_config.py, the only edit to them), the Services' host names
in the proxy API URL and the hub's bind/connect URLs (127.0.0.1 and free ports, given as command
line options, which traitlets applies over the config file), the Service port variables
Kubernetes injects, POD_NAMESPACE (a fieldRef), and the in-cluster login (KUBECONFIG of the test
control plane, which KubeSpawner's client falls back to). The proxy runs beside the hub with the
chart's token. The idle culler the config starts calls the hub on localhost:8081 (hard-coded by
z2jh), which is not this hub's port: culling itself is not exercised here.

Then: log in as the admin (created by the role's extraConfig at the hub's first start), start a
server with the GPU profile, and read the pod the real KubeSpawner creates in the real API: GPU
limit, runtime class, toleration, environment from the Secret s3-notebooks, /dev/shm, home claim,
and the node the real kube-scheduler picked. kwok nodes run no containers, so the server never
answers and the spawn cannot finish: the test ends at the pod.
"""

from __future__ import annotations

import base64
import html
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ailab_testsupport import free_port, start_process, stop_process, wait_http
from chart_render import render_chart, role_values
from controlplane import ControlPlane, lab_nodes, missing_binaries
from kubernetes import client, config
from kubernetes.client.rest import ApiException

ROOT = Path(__file__).resolve().parents[3]

VENV_BIN = Path(sys.executable).parent
CHART = ROOT.parent / "shared" / "charts" / "jupyterhub"
CHP = ROOT / ".npm-chp" / "node_modules" / ".bin" / "configurable-http-proxy"
NAMESPACE = "ailab-platform"
MOUNT_ROOT = "/usr/local/etc/jupyterhub"
ADMIN, ADMIN_PASSWORD = "admin", "Adm1nPassw0rdFromTheSecret0123ab"
S3_KEYS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ENDPOINT_URL",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
)

pytestmark = pytest.mark.timeout(600)


def _decode(data: dict[str, str] | None) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (data or {}).items()}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, client.CoreV1Api]]:
    """A control plane of its own (the apply suite's is in another directory), with what the other
    roles make: the namespace, the Secret s3-notebooks and the RuntimeClass nvidia."""
    missing = missing_binaries()
    if missing:
        pytest.fail(f"test control plane not built ({', '.join(missing)} missing): run make kube-build")
    with ControlPlane(lab_nodes(), workdir=tmp_path_factory.mktemp("kube")) as cp:
        api = config.new_client_from_config(config_file=cp.kubeconfig)
        core = client.CoreV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
        data = {key: f"value-of-{key.lower()}" for key in S3_KEYS}
        core.create_namespaced_secret(
            NAMESPACE, client.V1Secret(metadata=client.V1ObjectMeta(name="s3-notebooks"), string_data=data)
        )
        client.NodeV1Api(api).create_runtime_class(
            client.V1RuntimeClass(metadata=client.V1ObjectMeta(name="nvidia"), handler="nvidia")
        )
        yield cp, core


def _hub_files(objects: list[dict[str, Any]], root: Path) -> dict[str, Any]:
    """Write the hub container's mounted files under ``root``; return the container."""
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    pod = by_name[("Deployment", "jupyterhub-hub")]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            data = by_name[("ConfigMap", volume["configMap"]["name"])]["data"]
        elif "secret" in volume and ("Secret", volume["secret"]["secretName"]) in by_name:
            data = _decode(by_name[("Secret", volume["secret"]["secretName"])].get("data"))
        else:
            continue  # the database claim: the hub's working directory instead
        assert mount["mountPath"].startswith(MOUNT_ROOT), mount
        target = root / mount["mountPath"][len(MOUNT_ROOT) :].strip("/")
        if "subPath" in mount:
            target.parent.mkdir(parents=True, exist_ok=True)
            text = data[mount["subPath"]]
            # The one edit to the chart's code: its files' location.
            target.write_text(text.replace(MOUNT_ROOT, str(root)))
        else:
            target.mkdir(parents=True, exist_ok=True)
            for key, value in data.items():
                (target / key).write_text(value)
    return container


def _container_env(container: dict[str, Any], secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "secretKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[ref["name"]][ref["key"]]
        else:
            assert item["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace", item
            env[item["name"]] = NAMESPACE
    return env


@pytest.fixture(scope="module")
def hub(
    tmp_path_factory: pytest.TempPathFactory, cluster: tuple[ControlPlane, client.CoreV1Api]
) -> Iterator[str]:
    """The hub and its proxy; yields the proxy's public URL."""
    if not (CHART / "Chart.yaml").is_file():
        pytest.skip(f"{CHART} is missing (the vendored chart sources beside the checkout)")
    jupyterhub = VENV_BIN / "jupyterhub"
    if not jupyterhub.exists():
        pytest.fail(f"{jupyterhub} is missing: install requirements/dev.txt (make venv)")
    if not CHP.exists():
        pytest.fail(f"{CHP} is missing: run make chp (configurable-http-proxy from npm)")
    cp, _core = cluster
    tmp = tmp_path_factory.mktemp("jupyterhub")
    values = role_values(tmp, "jupyterhub", "jupyterhub_chart_values", {"jupyterhub_gpu_enabled": True})
    objects = render_chart(CHART, "jupyterhub", NAMESPACE, tmp, values=values)
    container = _hub_files(objects, tmp / "etc")
    secrets = {o["metadata"]["name"]: _decode(o.get("data")) for o in objects if o["kind"] == "Secret"}
    secrets["jupyterhub-admin"] = {"username": ADMIN, "password": ADMIN_PASSWORD}  # the role's Secret
    env = _container_env(container, secrets)
    assert env["AILAB_ADMIN_PASSWORD"] == ADMIN_PASSWORD and env["POD_NAMESPACE"] == NAMESPACE

    hub_port, proxy_port, api_port = free_port(), free_port(), free_port()
    token = secrets["jupyterhub-hub"]["hub.config.ConfigurableHTTPProxy.auth_token"]
    assert env["CONFIGPROXY_AUTH_TOKEN"] == token
    # What Kubernetes injects for the Services the config reads ports from.
    env.update(JUPYTERHUB_HUB_SERVICE_PORT=str(hub_port), JUPYTERHUB_PROXY_API_SERVICE_PORT=str(api_port))
    base = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    base.update(
        PATH=f"{VENV_BIN}{os.pathsep}{base['PATH']}", KUBECONFIG=cp.kubeconfig, NO_PROXY="127.0.0.1,localhost"
    )
    hub_url = f"http://127.0.0.1:{hub_port}"
    proxy = start_process(
        [
            str(CHP),
            "--ip=127.0.0.1",
            f"--port={proxy_port}",
            "--api-ip=127.0.0.1",
            f"--api-port={api_port}",
            f"--default-target={hub_url}",
            f"--error-target={hub_url}/hub/error",
        ],
        tmp / "logs" / "chp.log",
        env={**base, "CONFIGPROXY_AUTH_TOKEN": token},
    )
    srv = tmp / "srv"  # the Deployment's workingDir /srv/jupyterhub (the database claim)
    srv.mkdir()
    cmd = [str(jupyterhub), "--config", str(tmp / "etc" / "jupyterhub_config.py")]
    cmd += [
        f"--ConfigurableHTTPProxy.api_url=http://127.0.0.1:{api_port}",
        f"--JupyterHub.hub_bind_url={hub_url}",
        f"--JupyterHub.hub_connect_url={hub_url}",
    ]
    assert container["args"][:3] == ["jupyterhub", "--config", f"{MOUNT_ROOT}/jupyterhub_config.py"], (
        container
    )
    log = tmp / "logs" / "hub.log"
    proc = start_process(cmd, log, env={**base, **env}, cwd=srv)
    try:
        wait_http(f"{hub_url}/hub/health", proc, log, timeout=90, what="the hub")
        yield f"http://127.0.0.1:{proxy_port}"
    finally:
        stop_process(proc)
        stop_process(proxy)
        print(log.read_text()[-6000:])


def _xsrf(response: httpx.Response) -> str:
    """The form's hidden _xsrf field, as a browser submits it."""
    match = re.search(r'<input[^>]*name="_xsrf"[^>]*value="([^"]+)"', response.text) or re.search(
        r'<input[^>]*value="([^"]+)"[^>]*name="_xsrf"', response.text
    )
    assert match, response.text[-3000:]
    return match.group(1)


def test_admin_logs_in_and_starts_a_gpu_server(
    hub: str, cluster: tuple[ControlPlane, client.CoreV1Api]
) -> None:
    _cp, core = cluster
    with httpx.Client(base_url=hub, timeout=30, follow_redirects=False, trust_env=False) as browser:
        page = browser.get("/hub/login")
        assert page.status_code == 200
        # A wrong password is refused: the account is NativeAuthenticator's, not open.
        wrong = browser.post(
            "/hub/login", data={"username": ADMIN, "password": "wrong-password-123", "_xsrf": _xsrf(page)}
        )
        assert wrong.status_code == 200 and "Invalid username or password" in wrong.text  # the form again
        page = browser.get("/hub/login")
        login = browser.post(
            "/hub/login", data={"username": ADMIN, "password": ADMIN_PASSWORD, "_xsrf": _xsrf(page)}
        )
        assert login.status_code == 302, login.text[:2000]
        # The spawn form offers the role's profiles; the admin picks the GPU one.
        form = browser.get("/hub/spawn")
        assert form.status_code == 200, form.text[:2000]
        assert 'value="cpu"' in form.text and 'value="gpu-1"' in form.text
        # The form posts to its action URL, which carries the _xsrf token.
        action = re.search(r'<form[^>]*id="spawn_form"[^>]*action="([^"]+)"', form.text, re.DOTALL)
        assert action, form.text[-3000:]
        started = browser.post(html.unescape(action.group(1)), data={"profile": "gpu-1"})
        assert started.status_code == 302, started.text[:2000]
        admin_page = browser.get("/hub/admin")
        assert admin_page.status_code == 200  # the account is an admin

    # The pod KubeSpawner made, once the real scheduler placed it (bounded poll).
    deadline = time.monotonic() + 120
    pod = None
    while time.monotonic() < deadline:
        try:
            pod = core.read_namespaced_pod(f"jupyter-{ADMIN}", NAMESPACE)
        except ApiException as exc:
            assert exc.status == 404
        if pod is not None and pod.spec.node_name:
            break
        time.sleep(1)
    assert pod is not None and pod.spec.node_name, f"no scheduled pod jupyter-{ADMIN}"
    assert pod.spec.node_name == "lab-gpu-1"  # the only node with nvidia.com/gpu capacity
    assert pod.spec.runtime_class_name == "nvidia"
    assert any(t.key == "nvidia.com/gpu" and t.operator == "Exists" for t in pod.spec.tolerations)
    (notebook,) = pod.spec.containers
    assert notebook.image == "ailab/notebook:0.1.0"
    assert notebook.resources.limits["nvidia.com/gpu"] == "1"
    refs = {
        e.name: e.value_from.secret_key_ref
        for e in notebook.env
        if e.value_from and e.value_from.secret_key_ref
    }
    for key in S3_KEYS:
        assert (refs[key].name, refs[key].key) == ("s3-notebooks", key)
    plain = {e.name: e.value for e in notebook.env if e.value is not None}
    assert plain["MLFLOW_TRACKING_URI"] == f"http://mlflow.{NAMESPACE}.svc:5000"
    assert plain["LABEL_STUDIO_URL"] == f"http://label-studio.{NAMESPACE}.svc"
    assert not set(S3_KEYS) & set(plain)
    mounts = {m.mount_path: m.name for m in notebook.volume_mounts}
    volumes = {v.name: v for v in pod.spec.volumes}
    shm = volumes[mounts["/dev/shm"]].empty_dir
    assert (shm.medium, shm.size_limit) == ("Memory", "2Gi")
    home = volumes[mounts["/home/jovyan"]].persistent_volume_claim
    assert home.claim_name == f"claim-{ADMIN}"
    claim = core.read_namespaced_persistent_volume_claim(f"claim-{ADMIN}", NAMESPACE)
    assert claim.spec.storage_class_name == "local-path"
    assert claim.spec.resources.requests["storage"] == "10Gi"
    # kwok runs no container: the server never answers, so the spawn stops here.
