"""mlflow_model against a real MLflow server whose artifacts live in moto S3."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

MODEL = "shapes-detector"


@pytest.fixture(scope="module")
def weights(workdir):
    """Two different YOLOv8n checkpoints, randomly initialised offline (no weights downloaded)."""
    os.environ["YOLO_OFFLINE"] = "1"
    import torch
    from ultralytics import YOLO

    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        path = workdir / f"yolov8n-seed{seed}.pt"
        YOLO("yolov8n.yaml").save(str(path))
        paths.append(path)
    return paths


def test_register_upload_move_alias_and_delete(playbook, mlflow_server, weights, workdir, monkeypatch):
    uri = mlflow_server["url"]
    first = {
        "tracking_uri": uri,
        "name": MODEL,
        "model_file": str(weights[0]),
        "alias": "champion",
        "tags": {"dataset": "shapes", "epochs": 1},
    }
    second = dict(first, model_file=str(weights[1]))
    results = playbook(
        [
            {"name": "Register (check)", "ailab.platform.mlflow_model": first, "check_mode": True},
            {"name": "Register v1 as champion", "ailab.platform.mlflow_model": first},
            {"name": "Register v1 again", "ailab.platform.mlflow_model": first},
            {"name": "Register v2 as champion", "ailab.platform.mlflow_model": second},
            {"name": "Register v2 again", "ailab.platform.mlflow_model": second},
        ]
    )
    check, v1, v1_again, v2, v2_again = results
    assert check["changed"] and check["version"] is None
    assert v1["changed"] and v1["version"] == "1" and v1["model_uri"] == f"models:/{MODEL}@champion"
    assert v1["previous_alias_version"] is None
    assert v1_again["changed"] is False and v1_again["version"] == "1"
    assert v2["changed"] and v2["version"] == "2" and v2["previous_alias_version"] == "1"
    assert v2_again["changed"] is False

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.version == "2"
    assert champion.tags["dataset"] == "shapes" and champion.tags["epochs"] == "1"

    # The registered artifact is the uploaded file itself, stored through the server in S3.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    import mlflow

    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{MODEL}@champion", dst_path=str(workdir / "download"), tracking_uri=uri
    )
    downloaded = [p for p in Path(local).iterdir() if p.suffix == ".pt"]
    assert [p.name for p in downloaded] == [weights[1].name]
    assert downloaded[0].read_bytes() == weights[1].read_bytes()

    back, tagged, delete, delete_again, gone = playbook(
        [
            {
                "name": "Roll the champion back",
                "ailab.platform.mlflow_model": {
                    "tracking_uri": uri,
                    "name": MODEL,
                    "version": "1",
                    "alias": "champion",
                },
            },
            {
                "name": "Register by source",
                "ailab.platform.mlflow_model": {
                    "tracking_uri": uri,
                    "name": MODEL,
                    "source": v2["source"],
                    "run_id": v2["run_id"],
                    "tags": {"stage": "candidate"},
                },
            },
            {
                "name": "Delete v2",
                "ailab.platform.mlflow_model": {
                    "tracking_uri": uri,
                    "name": MODEL,
                    "version": "2",
                    "state": "absent",
                },
            },
            {
                "name": "Delete v2 again",
                "ailab.platform.mlflow_model": {
                    "tracking_uri": uri,
                    "name": MODEL,
                    "version": "2",
                    "state": "absent",
                },
            },
            {
                "name": "Missing version",
                "ailab.platform.mlflow_model": {
                    "tracking_uri": uri,
                    "name": MODEL,
                    "version": "9",
                    "alias": "champion",
                },
                "ignore_errors": True,
            },
        ]
    )
    assert back["changed"] and back["previous_alias_version"] == "2"
    assert client.get_model_version_by_alias(MODEL, "champion").version == "1"
    # The same source is the same version: only the new tag is a change.
    assert tagged["version"] == "2" and tagged["actions"] == ["set tag stage"]
    assert delete["changed"] and delete_again["changed"] is False
    assert [v.version for v in client.search_model_versions(f"name='{MODEL}'")] == ["1"]
    assert gone["failed"] and "has no version 9" in gone["msg"]
