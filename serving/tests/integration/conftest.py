"""Real services on 127.0.0.1 for the integration tests: moto S3, an MLflow server, our server.

MLflow takes ~30-40 s to create its database on a busy 2-core machine, so its process starts as soon
as the session does (``mlflow_process``) and tests only wait for it when they need it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ailab_testsupport import MlflowServer, mlflow_server, moto_server
from serving_testlib import make_model, run_server

S3_BUCKET = "lab-models"


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory, model_repo: Path) -> Iterator[dict[str, Any]]:
    """moto_server with a bucket holding ``s3yolo`` v1 and v2 under ``models/``."""
    with moto_server(tmp_path_factory.mktemp("moto")) as s3:
        client = s3.client()
        client.create_bucket(Bucket=S3_BUCKET)
        client.upload_file(
            str(model_repo / "animals" / "1" / "model.pt"), S3_BUCKET, "models/s3yolo/1/model.pt"
        )
        client.upload_file(str(model_repo / "circles.pt"), S3_BUCKET, "models/s3yolo/2/model.pt")
        yield {"endpoint": s3.endpoint, "bucket": S3_BUCKET, "client": client}


@pytest.fixture(scope="session", autouse=True)
def mlflow_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """Start ``mlflow server`` early (not waited for here): its start-up overlaps the other tests."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow"), wait=False) as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_registry(mlflow_process: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The MLflow server, ready, with ``mlyolo`` v1 (dog) and v2 (circle, alias ``champion``)."""
    import mlflow  # noqa: PLC0415
    from mlflow import MlflowClient  # noqa: PLC0415

    uri = mlflow_process.wait(180)
    weights = tmp_path_factory.mktemp("mlweights")
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    client.create_registered_model("mlyolo")
    for favour, names in ((1, {0: "cat", 1: "dog"}), (0, {0: "circle", 1: "square"})):
        pt = make_model(weights / f"best-{favour}" / "best.pt", names, favour=favour, seed=10 + favour)
        with mlflow.start_run() as run:
            mlflow.log_artifact(str(pt), artifact_path="weights")
        version = client.create_model_version(
            "mlyolo", source=f"{run.info.artifact_uri}/weights", run_id=run.info.run_id
        )
    client.set_registered_model_alias("mlyolo", "champion", version.version)
    return uri


@pytest.fixture(scope="session")
def server(
    model_repo: Path, moto_s3: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The server as deployed: local models + S3, ONNX Runtime on CPU (the defaults), small images."""
    root = tmp_path_factory.mktemp("server")
    env = {
        "AILAB_SERVE_MODEL_DIR": str(model_repo),
        "AILAB_SERVE_S3_ENDPOINT": moto_s3["endpoint"],
        "AILAB_SERVE_S3_BUCKET": moto_s3["bucket"],
        "AILAB_SERVE_S3_PREFIX": "models/",
        "AILAB_SERVE_CACHE_DIR": str(root / "cache"),
        "AILAB_SERVE_DEFAULT_IMGSZ": "320",
        "AILAB_SERVE_MAX_LOADED_MODELS": "3",
        "AILAB_SERVE_CATALOG_TTL_S": "1",
        "AILAB_SERVE_VIDEO_URL_ALLOWLIST": "127.0.0.1",
        "AILAB_SERVE_PRELOAD": "circles",
    }
    with run_server(env, root / "server.log") as url:
        yield url
