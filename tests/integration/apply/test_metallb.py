"""The metallb role through playbooks/platform.yml against the test control plane (tests/kube/).

Lifecycle: install from the vendored chart (../shared/charts/metallb, as an offline lab does with
``lab_chart_dir``), check what the API holds, re-run (``changed=0``), then remove it. kwok runs
the controller and speaker pods (Ready, never really started), so the role's waits for the
controller Deployment and the webhook endpoints are exercised; the webhook itself is not called
(the control plane disables the webhook admission plugins: no webhook server can run here).
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from platform_vars import platform_only

PLAYBOOK = "playbooks/platform.yml"
NAMESPACE = "metallb-system"
POOL = "lab-pool"
GROUP, VERSION = "metallb.io", "v1beta1"
# What the chart installs with frrk8s.enabled=false (the crds subchart).
CRDS = {
    "bfdprofiles.metallb.io",
    "bgpadvertisements.metallb.io",
    "bgppeers.metallb.io",
    "communities.metallb.io",
    "configurationstates.metallb.io",
    "ipaddresspools.metallb.io",
    "l2advertisements.metallb.io",
    "servicebgpstatuses.metallb.io",
    "servicel2statuses.metallb.io",
}


def _vars(charts: Path, **extra: Any) -> dict[str, Any]:
    return {"lab_chart_dir": str(charts), "metallb_wait_timeout": 120, **platform_only("metallb"), **extra}


@pytest.fixture(scope="module")
def installed(playbook: Callable[..., Any], shared_charts: Path) -> Any:
    """The first run of the platform playbook: MetalLB installed from the vendored chart."""
    run = playbook(PLAYBOOK, _vars(shared_charts))
    assert run.recap()["changed"] > 0
    return run


def _crds(api: client.ApiClient) -> set[str]:
    names = {c.metadata.name for c in client.ApiextensionsV1Api(api).list_custom_resource_definition().items}
    return {n for n in names if n.endswith(".metallb.io")}


def _releases(helm: Any) -> list[str]:
    return [r["name"] for r in json.loads(helm("list", "--all-namespaces", "--all", "-o", "json"))]


def test_disabled_installs_nothing(
    playbook: Callable[..., Any], shared_charts: Path, kube_api: client.ApiClient, helm: Any
) -> None:
    # First in the module, before the `installed` fixture: on a cluster without MetalLB, so a role
    # that ignored metallb_enabled would show up as a release, a namespace and CRDs.
    assert "metallb" not in _releases(helm) and not _crds(kube_api), "MetalLB is already installed"
    run = playbook(PLAYBOOK, _vars(shared_charts, metallb_enabled=False))
    assert run.recap()["changed"] == 0, run.tail()
    assert "metallb" not in _releases(helm)
    assert _crds(kube_api) == set()
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(kube_api).read_namespace(NAMESPACE)
    assert err.value.status == 404


def test_install_creates_metallb_and_the_pool(
    installed: Any, kube_api: client.ApiClient, kube_cluster: Any
) -> None:
    assert _crds(kube_api) == CRDS

    core = client.CoreV1Api(kube_api)
    labels = core.read_namespace(NAMESPACE).metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"

    apps = client.AppsV1Api(kube_api)
    controller = apps.read_namespaced_deployment("metallb-controller", NAMESPACE)
    assert controller.status.available_replicas == 1
    speaker = apps.read_namespaced_daemon_set("metallb-speaker", NAMESPACE)
    # One speaker per node: kwok runs them on lab-server, lab-cpu-1 and lab-gpu-1 (and any node
    # another test added to the shared control plane).
    assert speaker.status.number_ready == speaker.status.desired_number_scheduled >= 3
    # L2 only: no FRR container in the speaker, no frr-k8s subchart.
    assert [c.name for c in speaker.spec.template.spec.containers] == ["speaker"]
    assert not apps.list_namespaced_daemon_set(
        NAMESPACE, label_selector="app.kubernetes.io/name=frr-k8s"
    ).items

    custom = client.CustomObjectsApi(kube_api)
    pool = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "ipaddresspools", POOL)
    assert pool["spec"]["addresses"] == [kube_cluster.loadbalancer_range]
    l2 = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "l2advertisements", POOL)
    assert l2["spec"]["ipAddressPools"] == [POOL]


def test_second_run_changes_nothing(
    installed: Any, playbook: Callable[..., Any], shared_charts: Path
) -> None:
    run = playbook(PLAYBOOK, _vars(shared_charts))
    assert run.recap()["changed"] == 0, run.tail()


def test_loadbalancer_service_gets_an_address_of_the_pool(
    installed: Any, kube_api: client.ApiClient, kube_cluster: Any
) -> None:
    # The address comes from the LoadBalancer stand-in reading the role's IPAddressPool, as
    # MetalLB's controller would: this checks the pool is usable, not MetalLB's own code. The
    # stand-in has no range of its own here (conftest starts it without one): no pool, no address.
    core = client.CoreV1Api(kube_api)
    service = client.V1Service(
        metadata=client.V1ObjectMeta(name="lb-probe"),
        spec=client.V1ServiceSpec(
            type="LoadBalancer", ports=[client.V1ServicePort(port=80)], selector={"a": "b"}
        ),
    )
    core.create_namespaced_service("default", service)
    try:
        deadline = time.monotonic() + 30
        ingress = None
        while time.monotonic() < deadline and not ingress:
            ingress = core.read_namespaced_service("lb-probe", "default").status.load_balancer.ingress
            time.sleep(0.5)
        assert ingress, "no address after 30 s"
        first, last = (ipaddress.ip_address(a) for a in kube_cluster.loadbalancer_range.split("-"))
        assert first <= ipaddress.ip_address(ingress[0].ip) <= last
    finally:
        core.delete_namespaced_service("lb-probe", "default")


def test_bad_range_fails_before_any_change(playbook: Callable[..., Any], shared_charts: Path) -> None:
    run = playbook(
        PLAYBOOK, _vars(shared_charts, metallb_address_range="192.168.1.250-192.168.1.240"), check=False
    )
    assert run.returncode != 0
    assert "metallb_address_range" in run.stdout
    assert "ends (192.168.1.240) before it starts" in run.stdout
    assert run.recap()["changed"] == 0


def test_chart_on_disk_of_another_version_is_refused(
    playbook: Callable[..., Any], shared_charts: Path
) -> None:
    run = playbook(PLAYBOOK, _vars(shared_charts, metallb_chart_version="0.15.2"), check=False)
    assert run.returncode != 0
    assert "is metallb chart 0.16.1, but metallb_chart_version is 0.15.2" in run.stdout, run.tail()
    assert run.recap()["changed"] == 0


def test_removal_leaves_no_release_and_no_pool(
    installed: Any, playbook: Callable[..., Any], shared_charts: Path, kube_api: client.ApiClient, helm: Any
) -> None:
    run = playbook(PLAYBOOK, _vars(shared_charts, metallb_state="absent"))
    assert run.recap()["changed"] > 0

    assert "metallb" not in _releases(helm)
    assert _crds(kube_api) == set()  # the release took its CRDs, and with them every pool
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(kube_api).read_namespace(NAMESPACE)
    assert err.value.status == 404

    again = playbook(PLAYBOOK, _vars(shared_charts, metallb_state="absent"))
    assert again.recap()["changed"] == 0, again.tail()
