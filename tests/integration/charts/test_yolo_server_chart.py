"""Render serving/chart (ailab-yolo-server) with helm and validate every object for Kubernetes 1.33.

The chart is rendered with the chart's defaults, with the values the yolo_server role computes
(``roles/yolo_server/tasks/values.yml`` run by ansible-playbook), and with the optional parts on.
Each rendered object passes ``kubernetes-validate --strict`` except the ServiceMonitor, whose CRD
schema kubernetes-validate does not carry (its fields are asserted here instead). Installing into a
real API server is tests/integration/apply/test_serving_apply.py.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest
from chart_render import KUBE_VERSION, helm_binary, render_chart
from chart_render import role_values as _role_values
from chart_render import run_values_step as _run_values_step

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "serving" / "chart"


def render(tmp_path: Path, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """helm template the chart; return the objects, validated strictly for 1.33 (but the
    ServiceMonitor: no schema in kubernetes-validate; asserted in its own test)."""
    return render_chart(
        CHART,
        "yolo",
        "ailab-serving",
        tmp_path,
        values=values,
        unvalidated=lambda obj: obj["apiVersion"].startswith("monitoring.coreos.com/"),
    )


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = [o["kind"] for o in objects]
    assert len(kinds) == len(set(kinds)), kinds
    return {o["kind"]: o for o in objects}


def container(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (server,) = objs["Deployment"]["spec"]["template"]["spec"]["containers"]
    return server


def env_of(server: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in server["env"]}


def role_values(tmp_path: Path, extra_vars: dict[str, Any]) -> dict[str, Any]:
    """The chart values roles/yolo_server computes with the shipped lab inventory and these variables."""
    return _role_values(tmp_path, "yolo_server", "yolo_server_chart_values", extra_vars)


def run_values_step(tmp_path: Path, extra_vars: dict[str, Any], *flags: str) -> tuple[dict[str, Any], str]:
    """Run the role's values step with ansible-playbook FLAGS; return the values and the output."""
    return _run_values_step(tmp_path, "yolo_server", "yolo_server_chart_values", extra_vars, *flags)


def test_helm_lint_is_clean() -> None:
    for flags in ([], ["--set", "gpu.enabled=true", "--set", "autoscaling.enabled=true"]):
        out = subprocess.run(
            [helm_binary(), "lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION, *flags],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert "[WARNING]" not in out.stdout and "[ERROR]" not in out.stdout, out.stdout


def test_defaults_run_on_cpu_behind_a_load_balancer(tmp_path: Path) -> None:
    objs = by_kind(render(tmp_path))
    assert set(objs) == {"ServiceAccount", "Service", "Deployment"}  # no Secret without values
    svc = objs["Service"]
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]
    assert "metallb.io/loadBalancerIPs" not in svc["metadata"].get("annotations", {})

    pod = objs["Deployment"]["spec"]["template"]["spec"]
    server = container(objs)
    assert objs["Deployment"]["spec"]["replicas"] == 1
    assert objs["Deployment"]["spec"]["strategy"]["type"] == "RollingUpdate"
    assert "runtimeClassName" not in pod
    assert "nvidia.com/gpu" not in server["resources"].get("limits", {})
    assert "nodeSelector" not in pod
    assert env_of(server)["AILAB_SERVE_DEVICE"] == "cpu"
    assert env_of(server)["AILAB_SERVE_PORT"] == "8000"
    assert server["image"] == "ailab/yolo-server:0.1.0"  # appVersion
    assert server["args"] == ["serve", "--host", "0.0.0.0", "--port", "8000"]

    assert server["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert server["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert server["startupProbe"]["httpGet"]["path"] == "/v2/health/live"

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert server["securityContext"]["allowPrivilegeEscalation"] is False
    assert server["securityContext"]["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in server["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert "emptyDir" in volumes[mounts["/tmp"]]  # writable under the read-only root filesystem
    assert server["resources"]["requests"] == {"cpu": "500m", "memory": "1Gi"}


def test_role_values_with_gpu_pinned_ip_and_model_store(tmp_path: Path) -> None:
    values = role_values(
        tmp_path,
        {
            "yolo_server_gpu_enabled": True,
            "yolo_server_gpu_count": 2,
            "yolo_server_loadbalancer_ip": "192.168.1.241",
            "yolo_server_image_registry": "registry.lab.local:5000",
            "yolo_server_s3_endpoint": "http://minio.ailab-platform.svc:9000",
            "yolo_server_s3_bucket": "ailab",
            "yolo_server_s3_access_key": "access",
            "yolo_server_s3_secret_key": "secret",
            "yolo_server_mlflow_uri": "http://mlflow.ailab-platform.svc:5000",
            "yolo_server_values": {"metrics": {"serviceMonitor": {"enabled": True}}},
        },
    )
    objs = by_kind(render(tmp_path, values))
    pod = objs["Deployment"]["spec"]["template"]["spec"]
    server = container(objs)

    assert server["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert server["resources"]["limits"]["memory"] == "4Gi"
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert objs["Deployment"]["spec"]["strategy"]["type"] == "Recreate"  # one GPU cannot surge
    assert server["image"] == "registry.lab.local:5000/ailab/yolo-server:0.1.0"

    annotations = objs["Service"]["metadata"]["annotations"]
    assert annotations["metallb.io/loadBalancerIPs"] == "192.168.1.241"

    env = env_of(server)
    assert env["AILAB_SERVE_DEVICE"] == "cuda"
    assert env["AILAB_SERVE_S3_ENDPOINT"] == "http://minio.ailab-platform.svc:9000"
    assert env["AILAB_SERVE_S3_BUCKET"] == "ailab"
    assert env["AILAB_SERVE_S3_PREFIX"] == "models/"
    assert env["AILAB_SERVE_S3_REGION"] == "us-east-1"
    assert env["AILAB_SERVE_MLFLOW_URI"] == "http://mlflow.ailab-platform.svc:5000"
    assert env["AILAB_SERVE_MODEL_DIR"] == "/models"
    secret = objs["Secret"]
    name = secret["metadata"]["name"]
    assert env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": name, "key": "AWS_ACCESS_KEY_ID"}}
    assert env["AWS_SECRET_ACCESS_KEY"]["secretKeyRef"]["name"] == name
    assert "AILAB_SERVE_API_KEY" not in env  # no API key asked for
    assert set(secret["data"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert all(e.get("value") != "secret" for e in server["env"])  # keys never as plain env

    monitor = objs["ServiceMonitor"]
    assert monitor["spec"]["endpoints"] == [
        {"port": "http", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]
    assert monitor["spec"]["selector"]["matchLabels"] == objs["Service"]["spec"]["selector"]


def test_role_values_without_gpu_or_secrets(tmp_path: Path) -> None:
    # yolo_server_gpu_enabled unset and no nodes to look at: the values step alone means CPU.
    objs = by_kind(render(tmp_path, role_values(tmp_path, {})))
    assert "Secret" not in objs
    server = container(objs)
    assert "nvidia.com/gpu" not in server["resources"]["limits"]
    assert env_of(server)["AILAB_SERVE_DEVICE"] == "cpu"
    assert "AILAB_SERVE_S3_ENDPOINT" not in env_of(server)  # empty settings are left out


def test_values_step_keeps_keys_out_of_the_log(tmp_path: Path) -> None:
    # At -vvv Ansible prints every task's result: the set_fact holding the values must be no_log.
    keys = {
        "yolo_server_s3_access_key": "access-7f3c1e9b",
        "yolo_server_s3_secret_key": "secret-5d2a8c40",
        "_yolo_server_api_key": "apikey-91be77d3",
    }
    values, output = run_values_step(tmp_path, keys, "-vvv")
    assert values["secret"]["s3SecretAccessKey"] == "secret-5d2a8c40"  # the step did run with them
    for name, key in keys.items():
        assert key not in output, f"{name} shows in the -vvv output"


def test_lab_minio_and_mlflow_with_the_servers_own_logins(tmp_path: Path) -> None:
    # What platform.yml leaves for the serving play of the same run: the minio and mlflow roles'
    # facts, and the keys they generated into the credentials directory.
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "s3-yolo-server").write_text("minio-key-of-the-yolo-server-0123456789")
    (credentials / "mlflow-admin-password").write_text("mlflow-admin-pass-0123456789abcdefgh")
    facts = {
        "lab_credentials_dir": str(credentials),
        "minio_endpoint_in_cluster": "http://minio.ailab-platform.svc:9000",
        "mlflow_tracking_uri": "http://mlflow.ailab-platform.svc:5000",
    }
    values, output = run_values_step(tmp_path, facts, "-v")
    for secret in ("minio-key-of-the-yolo-server-0123456789", "mlflow-admin-pass-0123456789abcdefgh"):
        assert secret not in output
    objs = by_kind(render(tmp_path, values))
    env = env_of(container(objs))
    assert env["AILAB_SERVE_S3_ENDPOINT"] == "http://minio.ailab-platform.svc:9000"
    assert env["AILAB_SERVE_S3_BUCKET"] == "ailab-models"
    assert env["AILAB_SERVE_MLFLOW_URI"] == "http://mlflow.ailab-platform.svc:5000"
    data = {k: base64.b64decode(v).decode() for k, v in objs["Secret"]["data"].items()}
    assert data == {
        "AWS_ACCESS_KEY_ID": "yolo-server",  # its own MinIO user, limited to its buckets
        "AWS_SECRET_ACCESS_KEY": "minio-key-of-the-yolo-server-0123456789",
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": "mlflow-admin-pass-0123456789abcdefgh",
    }
    for key in data:
        assert env[key] == {"secretKeyRef": {"name": "yolo-ailab-yolo-server", "key": key}}


def test_existing_secret_is_referenced_not_created(tmp_path: Path) -> None:
    objs = by_kind(render(tmp_path, {"secret": {"existingSecret": "model-store"}}))
    assert "Secret" not in objs
    env = env_of(container(objs))
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AILAB_SERVE_API_KEY"):
        assert env[key] == {"secretKeyRef": {"name": "model-store", "key": key, "optional": True}}


def test_api_key_and_autoscaling(tmp_path: Path) -> None:
    values = {
        "secret": {"apiKey": "k" * 40},
        "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 5},
        "modelStore": {"existingClaim": "models"},
    }
    objs = by_kind(render(tmp_path, values))
    assert "replicas" not in objs["Deployment"]["spec"]  # the HPA owns the count
    hpa = objs["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == objs["Deployment"]["metadata"]["name"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 5)
    assert env_of(container(objs))["AILAB_SERVE_API_KEY"]["secretKeyRef"]["key"] == "AILAB_SERVE_API_KEY"
    volumes = {v["name"]: v for v in objs["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["models"] == {"name": "models", "persistentVolumeClaim": {"claimName": "models"}}
    # A new key rolls the pods.
    other = by_kind(render(tmp_path, {**values, "secret": {"apiKey": "j" * 40}}))
    annotation = "checksum/secret"
    assert (
        objs["Deployment"]["spec"]["template"]["metadata"]["annotations"][annotation]
        != other["Deployment"]["spec"]["template"]["metadata"]["annotations"][annotation]
    )


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--set", "gpu.count=0"], ["gpu", "count"]),
        (["--set", "service.loadBalancerIP=192.168.1"], ["loadBalancerIP"]),
        (["--set", "server.device=gpu"], ["device"]),
        (["--set", "gpu.enabeld=true"], ["enabeld"]),
        (["--set", "service.type=Ingress"], ["type"]),
        (["--set-string", "server.port=http"], ["port"]),
    ],
)
def test_bad_values_fail_with_the_key(flags: list[str], words: list[str]) -> None:
    out = subprocess.run(
        [helm_binary(), "template", "yolo", str(CHART), "--kube-version", KUBE_VERSION, *flags],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert out.returncode != 0, out.stdout
    assert "schema" in out.stderr, out.stderr
    for word in words:
        assert word in out.stderr, out.stderr
