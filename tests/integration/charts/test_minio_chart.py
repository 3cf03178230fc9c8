"""Render MinIO 5.4.0 (../shared/charts/minio) with the values roles/minio computes.

Every object is validated with ``kubernetes-validate --strict`` for Kubernetes 1.33. Labs: the
shipped single-node lab (local-path), a 3-node lab on NFS (``lab_storage_class: nfs-client``) with
a pinned address, and an offline lab (chart from ``lab_chart_dir``: the same values, so the same
images to mirror). Installing into a real API server is tests/integration/apply/test_minio.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from chart_render import ROOT, render_chart, role_values

CHART = ROOT.parent / "shared" / "charts" / "minio"
NAMESPACE = "ailab-platform"
SERVICES = {"mlflow", "labelstudio", "yolo-server", "notebooks"}


@pytest.fixture(autouse=True)
def _chart() -> None:
    if not (CHART / "Chart.yaml").is_file():
        pytest.skip(f"{CHART} is missing (the vendored chart sources beside the checkout)")


def _render(tmp_path: Path, **extra_vars: Any) -> dict[tuple[str, str], dict[str, Any]]:
    values = role_values(tmp_path, "minio", "minio_chart_values", extra_vars)
    objects = render_chart(CHART, "minio", NAMESPACE, tmp_path, values=values)
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def test_single_node_lab_is_one_standalone_server_without_keys_in_values(tmp_path: Path) -> None:
    objs = _render(tmp_path)
    deployment = objs[("Deployment", "minio")]
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "quay.io/minio/minio:RELEASE.2024-12-18T13-15-44Z"
    assert container["resources"]["requests"]["memory"] == "1Gi"  # not the chart's 16Gi
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    assert refs["MINIO_ROOT_USER"] == refs["MINIO_ROOT_PASSWORD"] == "minio-root"
    # The chart makes its own root Secret only without existingSecret: none is rendered.
    assert not [k for k in objs if k[0] == "Secret"]

    claim = objs[("PersistentVolumeClaim", "minio")]
    assert claim["spec"]["storageClassName"] == "local-path"
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    service = objs[("Service", "minio")]
    assert service["spec"]["type"] == "LoadBalancer"
    assert [p["port"] for p in service["spec"]["ports"]] == [9000]
    assert objs[("Service", "minio-console")]["spec"]["type"] == "ClusterIP"


def test_each_service_user_reads_its_key_from_its_secret_and_gets_only_its_buckets(tmp_path: Path) -> None:
    objs = _render(tmp_path)
    job = objs[("Job", "minio-post-job")]["spec"]["template"]["spec"]
    sources = [
        s["secret"]["name"]
        for v in job["volumes"]
        if "projected" in v
        for s in v["projected"]["sources"]
        if "secret" in s
    ]
    assert {f"s3-{s}" for s in SERVICES} <= set(sources)
    config = objs[("ConfigMap", "minio")]["data"]
    policies = [json.loads(v) for k, v in config.items() if k.startswith("policy_")]
    resources = sorted(tuple(p["Statement"][0]["Resource"]) for p in policies)
    assert ("arn:aws:s3:::ailab-mlflow", "arn:aws:s3:::ailab-mlflow/*") in resources
    assert len(policies) == len(SERVICES)
    for service in SERVICES:
        # The mc Job reads each key from the Secret it mounts: no key is in the chart's values.
        assert f"cat /config/secrets/s3-{service}/AWS_SECRET_ACCESS_KEY" in config["add-user"]


def test_three_node_nfs_lab_puts_the_volume_on_nfs_behind_the_pinned_address(tmp_path: Path) -> None:
    objs = _render(tmp_path, lab_storage_class="nfs-client", minio_loadbalancer_ip="192.168.1.242")
    assert objs[("PersistentVolumeClaim", "minio")]["spec"]["storageClassName"] == "nfs-client"
    service = objs[("Service", "minio")]
    assert service["metadata"]["annotations"]["metallb.io/loadBalancerIPs"] == "192.168.1.242"


def test_offline_lab_renders_the_same_pinned_images(tmp_path: Path) -> None:
    (tmp_path / "online").mkdir()
    (tmp_path / "offline").mkdir()
    online = _render(tmp_path / "online")
    offline = _render(tmp_path / "offline", lab_chart_dir=str(CHART.parent))

    def images(objs: dict[tuple[str, str], dict[str, Any]]) -> set[str]:
        return {
            c["image"]
            for o in objs.values()
            if o["kind"] in {"Deployment", "Job"}
            for c in o["spec"]["template"]["spec"]["containers"]
        }

    assert (
        images(offline)
        == images(online)
        == {
            "quay.io/minio/minio:RELEASE.2024-12-18T13-15-44Z",
            "quay.io/minio/mc:RELEASE.2024-11-21T17-21-54Z",
        }
    )
