"""playbooks/serving.yml against the test control plane (tests/kube, fixtures in conftest.py).

Lifecycle: check mode on an empty cluster changes nothing; the first run installs the chart with
GPUs found on lab-gpu-1 (nvidia.com/gpu capacity) and a pinned load balancer address; a second run
changes nothing; switching GPUs off moves the server to the CPU. kwok marks the pods Running and
Ready, and the LoadBalancer stand-in assigns the pinned address as MetalLB would. The image is not
built here (``yolo_server_image_build: false``; building it is
tests/integration/serving_image/test_yolo_server_image.py) and the kubelet's pull is simulated.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

NAMESPACE = "ailab-serving"
RELEASE = "yolo-server"
# Inside the fixture's lab_loadbalancer_range (TEST-NET-2, RFC 5737): written, never contacted.
PINNED_IP = "198.51.100.245"
PLAYBOOK = "playbooks/serving.yml"
INVENTORY_VARS = {
    "lab_distribution": "k3s",
    "lab_s3_endpoint": "http://minio.ailab-platform.svc:9000",
    "lab_s3_bucket": "ailab",
    "lab_s3_region": "us-east-1",
    "yolo_server_image_build": False,
    "yolo_server_loadbalancer_ip": PINNED_IP,
    "yolo_server_wait_timeout": 180,
    "yolo_server_address_timeout": 60,
}


@pytest.fixture(scope="module")
def kube(kube_api: Any, helm: Any) -> Iterator[Any]:
    # The GPU layer creates this RuntimeClass on a real lab; the serving role checks for it.
    try:
        client.NodeV1Api(kube_api).create_runtime_class(
            client.V1RuntimeClass(metadata=client.V1ObjectMeta(name="nvidia"), handler="nvidia")
        )
    except ApiException as exc:
        if exc.status != 409:  # the GPU layer's test made it already
            raise
    yield kube_api
    # Leave the shared control plane as we found it.
    helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--ignore-not-found", "--wait")
    try:
        client.CoreV1Api(kube_api).delete_namespace(NAMESPACE)
    except ApiException as exc:
        if exc.status != 404:
            raise


def _deployment(api: Any) -> Any:
    (deployment,) = client.AppsV1Api(api).list_namespaced_deployment(NAMESPACE).items
    return deployment


def test_check_mode_changes_nothing(kube_cluster: Any, kube: Any, playbook: Any) -> None:
    assert "lab-gpu-1" in kube_cluster.nodes
    run = playbook(PLAYBOOK, INVENTORY_VARS, "--check")
    assert run.recap()["failed"] == 0
    namespaces = [n.metadata.name for n in client.CoreV1Api(kube).list_namespace().items]
    assert NAMESPACE not in namespaces


def test_install_finds_the_gpu_and_pins_the_address(kube: Any, playbook: Any) -> None:
    run = playbook(PLAYBOOK, INVENTORY_VARS)
    assert run.recap()["changed"] > 0
    assert f"YOLO server: http://{PINNED_IP}:8000" in run.stdout

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
    assert server.image == "ailab/yolo-server:0.1.0"
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
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"  # and the pod was admitted


def test_second_run_changes_nothing(kube: Any, playbook: Any) -> None:
    generation = _deployment(kube).metadata.generation
    run = playbook(PLAYBOOK, INVENTORY_VARS)
    assert run.recap()["changed"] == 0, run.tail()
    assert _deployment(kube).metadata.generation == generation


def test_check_mode_on_the_installed_release_reports_nothing_to_do(kube: Any, playbook: Any) -> None:
    run = playbook(PLAYBOOK, INVENTORY_VARS, "--check")
    assert run.recap()["changed"] == 0, run.tail()
    # Check mode with a change to make: reported, not made.
    run = playbook(PLAYBOOK, {**INVENTORY_VARS, "yolo_server_gpu_count": 2}, "--check")
    assert run.recap()["changed"] > 0
    (server,) = _deployment(kube).spec.template.spec.containers
    assert server.resources.limits["nvidia.com/gpu"] == "1"


def test_gpu_off_moves_the_server_to_the_cpu(kube: Any, playbook: Any) -> None:
    run = playbook(PLAYBOOK, {**INVENTORY_VARS, "yolo_server_gpu_enabled": False})
    assert run.recap()["changed"] > 0
    deployment = _deployment(kube)
    pod_spec = deployment.spec.template.spec
    (server,) = pod_spec.containers
    assert pod_spec.runtime_class_name is None
    assert "nvidia.com/gpu" not in (server.resources.limits or {})
    assert {e.name: e.value for e in server.env}["AILAB_SERVE_DEVICE"] == "cpu"
    assert deployment.status.ready_replicas == 1
