"""Render the vendored zero-to-jupyterhub chart 4.4.0 with the values the jupyterhub role computes.

``roles/jupyterhub/tasks/values.yml`` runs through ansible-playbook with the shipped lab inventory;
the chart (``../shared/charts/jupyterhub``) is rendered with helm and every object validated
strictly for Kubernetes 1.33. The profiles, environment and volumes of the users' servers are not
chart objects (KubeSpawner makes the pods): here they are asserted in the values the hub reads
(the chart's hub Secret, ``values.yaml``); tests/integration/roles/test_jupyterhub_hub.py runs the
real hub on them and checks the pod KubeSpawner creates. Installing the chart into a real API
server is tests/integration/apply/test_jupyterhub.py.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_render import render_chart, role_values

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT.parent / "shared" / "charts" / "jupyterhub"
NAMESPACE = "ailab-platform"
PINNED_IP = "192.168.1.242"
S3_KEYS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ENDPOINT_URL",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
)


@pytest.fixture(scope="module", autouse=True)
def _chart() -> None:
    if not (CHART / "Chart.yaml").is_file():
        pytest.skip(f"{CHART} is missing (the vendored chart sources beside the checkout)")


def render(tmp_path: Path, extra_vars: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    values = role_values(tmp_path, "jupyterhub", "jupyterhub_chart_values", extra_vars)
    return values, render_chart(CHART, "jupyterhub", NAMESPACE, tmp_path, values=values)


def obj(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def hub_values(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """What the hub's z2jh.py reads: values.yaml of the chart's hub Secret."""
    data = obj(objects, "Secret", "jupyterhub-hub")["data"]
    return yaml.safe_load(base64.b64decode(data["values.yaml"]))


def images(objects: list[dict[str, Any]]) -> set[str]:
    found = set()
    for o in objects:
        spec = o.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            found.add(c["image"])
    return found


def test_cpu_only_lab(tmp_path: Path) -> None:
    _values, objects = render(
        tmp_path, {"jupyterhub_gpu_enabled": False, "jupyterhub_loadbalancer_ip": PINNED_IP}
    )
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    # No user scheduler, placeholders, priority classes or image pullers (see the role README).
    assert not [
        k for k in kinds if any(s in k[1] for s in ("scheduler", "placeholder", "puller", "priority"))
    ]
    assert ("PersistentVolumeClaim", "jupyterhub-hub-db-dir") in kinds

    service = obj(objects, "Service", "jupyterhub-proxy-public")
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["metadata"]["annotations"] == {"metallb.io/loadBalancerIPs": PINNED_IP}
    assert [p["port"] for p in service["spec"]["ports"]] == [80]
    pvc = obj(objects, "PersistentVolumeClaim", "jupyterhub-hub-db-dir")
    assert pvc["spec"]["storageClassName"] == "local-path"

    cfg = hub_values(objects)
    single = cfg["singleuser"]
    assert [p["slug"] for p in single["profileList"]] == ["cpu"]
    assert single["profileList"][0]["kubespawner_override"]["mem_limit"] == "4G"
    env = single["extraEnv"]
    assert env["MLFLOW_TRACKING_URI"] == f"http://mlflow.{NAMESPACE}.svc:5000"
    assert env["LABEL_STUDIO_URL"] == f"http://label-studio.{NAMESPACE}.svc"
    for key in S3_KEYS:
        assert env[key] == {"valueFrom": {"secretKeyRef": {"name": "s3-notebooks", "key": key}}}
    assert single["storage"]["type"] == "dynamic"
    assert single["storage"]["dynamic"]["storageClass"] == "local-path"
    assert single["storage"]["extraVolumeMounts"] == [{"name": "shm", "mountPath": "/dev/shm"}]
    assert single["storage"]["extraVolumes"][0]["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    assert single["cloudMetadata"]["blockWithIptables"] is False
    assert (single["image"]["name"], single["image"]["tag"]) == ("ailab/notebook", "0.1.0")
    assert cfg["cull"]["enabled"] is True and cfg["cull"]["timeout"] == 3600

    # Notebooks may reach the lab's private addresses (MLflow, MinIO, Label Studio).
    netpol = obj(objects, "NetworkPolicy", "jupyterhub-singleuser")
    private = [
        rule
        for rule in netpol["spec"]["egress"]
        for to in rule.get("to", [])
        if to.get("ipBlock", {}).get("cidr") == "10.0.0.0/8"
    ]
    assert private

    # NativeAuthenticator: the admin from the role's Secret, created by the extraConfig snippet.
    hub = cfg["hub"]
    assert hub["config"]["Authenticator"] == {"admin_users": ["admin"], "allow_all": True}
    assert hub["extraEnv"]["AILAB_ADMIN_PASSWORD"] == {
        "valueFrom": {"secretKeyRef": {"name": "jupyterhub-admin", "key": "password"}}
    }
    assert "class LabNativeAuthenticator(NativeAuthenticator)" in hub["extraConfig"]["ailab-native-admin"]
    (hub_container,) = obj(objects, "Deployment", "jupyterhub-hub")["spec"]["template"]["spec"]["containers"]
    env_names = {e["name"]: e for e in hub_container["env"]}
    assert env_names["AILAB_ADMIN_USER"]["valueFrom"]["secretKeyRef"]["name"] == "jupyterhub-admin"
    # No S3 key or password anywhere in the rendered objects (only references).
    assert images(objects) == {
        "quay.io/jupyterhub/k8s-hub:4.4.0",
        "quay.io/jupyterhub/configurable-http-proxy:5.2.0",
    }


def test_lab_with_gpu_nodes(tmp_path: Path) -> None:
    _values, objects = render(tmp_path, {"jupyterhub_gpu_enabled": True, "jupyterhub_gpu_counts": [1, 2]})
    profiles = {p["slug"]: p for p in hub_values(objects)["singleuser"]["profileList"]}
    assert list(profiles) == ["cpu", "gpu-1", "gpu-2"]
    assert profiles["cpu"]["default"] is True
    assert "extra_resource_limits" not in profiles["cpu"]["kubespawner_override"]
    for count in (1, 2):
        override = profiles[f"gpu-{count}"]["kubespawner_override"]
        assert override["extra_resource_limits"] == {"nvidia.com/gpu": str(count)}
        assert override["extra_pod_config"] == {"runtimeClassName": "nvidia"}
        assert override["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
        assert override["mem_limit"] == "32G"
    # No pinned address: MetalLB picks one.
    assert not obj(objects, "Service", "jupyterhub-proxy-public")["metadata"].get("annotations")


def test_offline_lab_with_a_registry_and_oauth(tmp_path: Path) -> None:
    # Offline: every image from the lab's registry (the chart from lab_chart_dir is the apply test).
    oauth = {
        "GenericOAuthenticator": {
            "client_id": "jupyterhub",
            "client_secret": "oauth-client-secret",
            "authorize_url": "https://sso.example.org/auth",
            "token_url": "https://sso.example.org/token",
            "userdata_url": "https://sso.example.org/userinfo",
        },
        "Authenticator": {"allowed_users": ["alice"]},
    }
    _values, objects = render(
        tmp_path,
        {
            "jupyterhub_image_registry": "registry.lab.local:5000",
            "jupyterhub_authenticator": "generic-oauth",
            "jupyterhub_auth_config": oauth,
            "lab_platform_namespace": NAMESPACE,
        },
    )
    assert images(objects) == {
        "registry.lab.local:5000/jupyterhub/k8s-hub:4.4.0",
        "registry.lab.local:5000/jupyterhub/configurable-http-proxy:5.2.0",
    }
    cfg = hub_values(objects)
    assert cfg["singleuser"]["image"]["name"] == "registry.lab.local:5000/ailab/notebook"
    assert (
        cfg["singleuser"]["networkTools"]["image"]["name"]
        == "registry.lab.local:5000/jupyterhub/k8s-network-tools"
    )
    config = cfg["hub"]["config"]
    assert config["JupyterHub"]["authenticator_class"] == "oauthenticator.generic.GenericOAuthenticator"
    assert config["GenericOAuthenticator"]["client_id"] == "jupyterhub"
    # allowed_users from the inventory; no allow_all and no native admin account.
    assert config["Authenticator"] == {"admin_users": ["admin"], "allowed_users": ["alice"]}
    assert not cfg["hub"]["extraConfig"] and not cfg["hub"]["extraEnv"]
    # The client secret is in the hub Secret only, never in a ConfigMap.
    for o in objects:
        if o["kind"] == "ConfigMap":
            assert "oauth-client-secret" not in yaml.safe_dump(o), o["metadata"]["name"]
