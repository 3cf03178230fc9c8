"""playbooks/serving.yml against the test control plane (tests/kube, fixture ``kube_cluster``).

Lifecycle: check mode on an empty cluster changes nothing; the first run installs the chart with
GPUs found on lab-gpu-1 (nvidia.com/gpu capacity) and a pinned load balancer address; a second run
changes nothing; switching GPUs off rolls the Deployment onto the CPU. kwok marks the pods Running
and Ready, and the LoadBalancer stand-in assigns the pinned address as MetalLB would. The image is
not built here (``yolo_server_image_build: false``): building it is
tests/integration/serving_image/test_yolo_server_image.py, and pulling it is not simulated.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

ROOT = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.executable).parent
NAMESPACE = "ailab-serving"
RELEASE = "yolo-server"
# A documentation address (RFC 5737): the stand-in writes it into the Service; nothing connects.
PINNED_IP = "192.0.2.10"


def _helm_dir(kube_cluster: Any) -> Path:
    for candidate in (getattr(kube_cluster, "bin_dir", None), ROOT / "tests" / "kube" / ".build" / "bin"):
        if candidate and (Path(candidate) / "helm").is_file():
            return Path(candidate)
    pytest.fail("no helm next to the test control plane: run `make kube-build`")


def run_playbook(
    kube_cluster: Any, tmp_path: Path, extra_vars: dict[str, Any], *args: str
) -> subprocess.CompletedProcess[str]:
    link = ROOT / ".collections" / "ansible_collections" / "ailab" / "platform"
    if not link.exists():
        pytest.fail(f"{link} is missing: run `make collection`")
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": {
                        "localhost": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": sys.executable,
                        }
                    },
                    "vars": {
                        "lab_kubeconfig": str(kube_cluster.kubeconfig),
                        "lab_distribution": "k3s",
                        "lab_s3_endpoint": "http://minio.ailab-platform.svc:9000",
                        "lab_s3_bucket": "ailab",
                        "lab_s3_region": "us-east-1",
                        "lab_credentials_dir": str(tmp_path / "credentials"),
                        "yolo_server_image_build": False,
                        "yolo_server_loadbalancer_ip": PINNED_IP,
                        "yolo_server_wait_timeout": 180,
                        "yolo_server_address_timeout": 60,
                    },
                }
            }
        )
    )
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": os.pathsep.join([str(_helm_dir(kube_cluster)), str(VENV_BIN), os.environ["PATH"]]),
    }
    env.pop("KUBECONFIG", None)  # the role must use lab_kubeconfig, nothing else
    cmd = [
        str(VENV_BIN / "ansible-playbook"),
        "-i",
        str(inventory),
        str(ROOT / "playbooks" / "serving.yml"),
        "-e",
        json.dumps(extra_vars),
        *args,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False, timeout=600)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    return out


def recap(out: subprocess.CompletedProcess[str]) -> dict[str, int]:
    match = re.search(r"^localhost\s*:\s*(.*)$", out.stdout.split("PLAY RECAP")[-1], re.MULTILINE)
    assert match, out.stdout[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


@pytest.fixture(scope="module")
def kube(kube_cluster: Any) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(kube_cluster.kubeconfig))
    # The GPU layer creates this RuntimeClass on a real lab; the serving role checks for it.
    node_api = client.NodeV1Api(api)
    try:
        node_api.create_runtime_class(
            client.V1RuntimeClass(metadata=client.V1ObjectMeta(name="nvidia"), handler="nvidia")
        )
    except ApiException as exc:
        if exc.status != 409:  # another test made it already
            raise
    yield api
    # Leave the shared control plane as we found it (the namespace goes with the release).
    subprocess.run(
        [str(_helm_dir(kube_cluster) / "helm"), "uninstall", RELEASE, "-n", NAMESPACE, "--wait"],
        env={**os.environ, "KUBECONFIG": str(kube_cluster.kubeconfig)},
        capture_output=True,
        check=False,
        timeout=120,
    )
    try:
        client.CoreV1Api(api).delete_namespace(NAMESPACE)
    except ApiException as exc:
        if exc.status != 404:
            raise


def _deployment(api: client.ApiClient) -> Any:
    (deployment,) = client.AppsV1Api(api).list_namespaced_deployment(NAMESPACE).items
    return deployment


def test_check_mode_changes_nothing(kube_cluster: Any, kube: client.ApiClient, tmp_path: Path) -> None:
    assert "lab-gpu-1" in kube_cluster.nodes
    out = run_playbook(kube_cluster, tmp_path, {}, "--check")
    assert recap(out)["failed"] == 0
    names = [n.metadata.name for n in client.CoreV1Api(kube).list_namespace().items]
    assert NAMESPACE not in names


def test_install_finds_the_gpu_and_pins_the_address(
    kube_cluster: Any, kube: client.ApiClient, tmp_path: Path
) -> None:
    out = run_playbook(kube_cluster, tmp_path, {})
    assert recap(out)["changed"] > 0
    assert f"YOLO server: http://{PINNED_IP}:8000" in out.stdout

    deployment = _deployment(kube)
    assert deployment.status.ready_replicas == 1  # helm waited; kwok made the pod Ready
    pod_spec = deployment.spec.template.spec
    (server,) = pod_spec.containers
    assert pod_spec.runtime_class_name == "nvidia"
    assert pod_spec.node_selector == {"nvidia.com/gpu.present": "true"}
    assert server.resources.limits["nvidia.com/gpu"] == "1"
    env = {e.name: e.value for e in server.env}
    assert env["AILAB_SERVE_DEVICE"] == "cuda"
    assert env["AILAB_SERVE_S3_ENDPOINT"] == "http://minio.ailab-platform.svc:9000"
    assert env["AILAB_SERVE_S3_BUCKET"] == "ailab"
    assert server.readiness_probe.http_get.path == "/v2/health/ready"
    assert server.liveness_probe.http_get.path == "/v2/health/live"

    core = client.CoreV1Api(kube)
    pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"app.kubernetes.io/instance={RELEASE}").items
    assert [p.spec.node_name for p in pods] == ["lab-gpu-1"]  # the only node with a GPU

    (service,) = core.list_namespaced_service(NAMESPACE).items
    assert service.spec.type == "LoadBalancer"
    assert service.metadata.annotations["metallb.io/loadBalancerIPs"] == PINNED_IP
    assert [i.ip for i in service.status.load_balancer.ingress] == [PINNED_IP]

    labels = core.read_namespace(NAMESPACE).metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_second_run_changes_nothing(kube_cluster: Any, kube: client.ApiClient, tmp_path: Path) -> None:
    generation = _deployment(kube).metadata.generation
    out = run_playbook(kube_cluster, tmp_path, {})
    assert recap(out)["changed"] == 0, out.stdout[-6000:]
    assert _deployment(kube).metadata.generation == generation


def test_gpu_off_moves_the_server_to_the_cpu(
    kube_cluster: Any, kube: client.ApiClient, tmp_path: Path
) -> None:
    out = run_playbook(kube_cluster, tmp_path, {"yolo_server_gpu_enabled": False})
    assert recap(out)["changed"] > 0
    deployment = _deployment(kube)
    pod_spec = deployment.spec.template.spec
    (server,) = pod_spec.containers
    assert pod_spec.runtime_class_name is None
    assert "nvidia.com/gpu" not in (server.resources.limits or {})
    assert {e.name: e.value for e in server.env}["AILAB_SERVE_DEVICE"] == "cpu"
    assert deployment.status.ready_replicas == 1
