"""The test control plane itself (tests/kube/): what the apply tests rely on, checked once.

Real: the API server's version, RBAC, the scheduler (extended resources such as nvidia.com/gpu),
the Job and Deployment controllers. Simulated by kwok: node readiness, pod phases. Stand-ins: the
LoadBalancer address and the PV behind a claim (see tests/kube/README.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

NS = "control-plane-selftest"


def _wait(what: str, predicate: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def namespace(kube_api: client.ApiClient) -> Any:
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
    yield NS
    core.delete_namespace(NS)


def test_api_reports_the_pinned_kubernetes_version(kube_api: client.ApiClient) -> None:
    version = client.VersionApi(kube_api).get_code()
    assert (version.git_version, version.major, version.minor) == ("v1.36.3", "1", "36")


def test_the_lab_nodes_are_ready_with_their_gpu(kube_cluster: Any, kube_api: client.ApiClient) -> None:
    nodes = {n.metadata.name: n for n in client.CoreV1Api(kube_api).list_node().items}
    assert {"lab-server", "lab-cpu-1", "lab-gpu-1"} <= set(nodes)
    for node in nodes.values():
        ready = [c.status for c in node.status.conditions if c.type == "Ready"]
        assert ready == ["True"], node.metadata.name
    gpu = nodes["lab-gpu-1"]
    assert gpu.status.capacity["nvidia.com/gpu"] == "2"
    assert gpu.metadata.labels["nvidia.com/gpu.present"] == "true"
    assert "nvidia.com/gpu" not in nodes["lab-cpu-1"].status.capacity
    assert "node-role.kubernetes.io/control-plane" in nodes["lab-server"].metadata.labels
    assert gpu.status.node_info.kubelet_version == "v1.36.3+k3s1"
    assert kube_cluster.server.startswith("https://127.0.0.1:")


def test_rbac_is_enforced(kube_api: client.ApiClient, namespace: str) -> None:
    # A ServiceAccount's token (signed by the API server) has no rights until a Role grants them.
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="nobody"))
    )
    token = core.create_namespaced_service_account_token(
        "nobody", namespace, client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
    ).status.token
    config = client.Configuration()
    config.host = kube_api.configuration.host
    config.ssl_ca_cert = kube_api.configuration.ssl_ca_cert
    config.api_key = {"authorization": f"Bearer {token}"}
    with pytest.raises(ApiException) as denied:
        client.CoreV1Api(client.ApiClient(config)).list_namespaced_secret(namespace)
    assert denied.value.status == 403


def test_gpu_job_is_scheduled_on_the_gpu_node_and_succeeds(
    kube_api: client.ApiClient, namespace: str
) -> None:
    container = client.V1Container(
        name="smi",
        image="nvidia/cuda:12.4.1-base",
        resources=client.V1ResourceRequirements(limits={"nvidia.com/gpu": "1"}),
    )
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="gpu-smoke"),
        spec=client.V1JobSpec(
            template=client.V1PodTemplateSpec(
                spec=client.V1PodSpec(restart_policy="Never", containers=[container])
            )
        ),
    )
    batch = client.BatchV1Api(kube_api)
    batch.create_namespaced_job(namespace, job)
    _wait("the Job to succeed", lambda: batch.read_namespaced_job("gpu-smoke", namespace).status.succeeded)
    (pod,) = (
        client.CoreV1Api(kube_api).list_namespaced_pod(namespace, label_selector="job-name=gpu-smoke").items
    )
    assert pod.spec.node_name == "lab-gpu-1"
    assert pod.status.phase == "Succeeded"


def test_claim_is_bound_and_service_gets_an_address(
    kube_cluster: Any, kube_api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_persistent_volume_claim(
        namespace,
        client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(name="data"),
            spec=client.V1PersistentVolumeClaimSpec(
                access_modes=["ReadWriteOnce"],
                resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}),
            ),
        ),
    )
    labels = {"app": "web"}
    pod_spec = client.V1PodSpec(
        containers=[client.V1Container(name="web", image="nginx")],
        volumes=[
            client.V1Volume(
                name="data",
                persistent_volume_claim=client.V1PersistentVolumeClaimVolumeSource(claim_name="data"),
            )
        ],
    )
    client.AppsV1Api(kube_api).create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1DeploymentSpec(
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels), spec=pod_spec),
            ),
        ),
    )
    core.create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(
                name="web", annotations={"metallb.io/loadBalancerIPs": "198.51.100.249"}
            ),
            spec=client.V1ServiceSpec(
                type="LoadBalancer", selector=labels, ports=[client.V1ServicePort(port=80)]
            ),
        ),
    )
    _wait(
        "the Deployment to be ready",
        lambda: client.AppsV1Api(kube_api).read_namespaced_deployment("web", namespace).status.ready_replicas,
    )
    _wait(
        "the claim to be bound",
        lambda: core.read_namespaced_persistent_volume_claim("data", namespace).status.phase == "Bound",
    )
    ingress = _wait(
        "a load balancer address",
        lambda: core.read_namespaced_service("web", namespace).status.load_balancer.ingress,
    )
    assert [i.ip for i in ingress] == ["198.51.100.249"]  # the pinned address, as MetalLB honours it


def test_nodes_can_be_added_and_removed(kube_cluster: Any) -> None:
    kube_cluster.add_node(
        "lab-cpu-9",
        labels={"team": "vision"},
        taints=[{"key": "dedicated", "value": "x", "effect": "NoSchedule"}],
    )
    assert "lab-cpu-9" in kube_cluster.nodes
    kube_cluster.remove_node("lab-cpu-9")
    assert "lab-cpu-9" not in kube_cluster.nodes
