"""Models from a real MLflow registry: versions, aliases (``name@alias``), the standard URI variable."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from serving_testlib import jpeg, run_server, shapes_image


@pytest.fixture(scope="module")
def mlflow_server(mlflow_registry: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlserver")
    env = {
        # The standard variable, as notebooks and training jobs set it, is enough.
        "MLFLOW_TRACKING_URI": mlflow_registry,
        "AILAB_SERVE_CACHE_DIR": str(root / "cache"),
        "AILAB_SERVE_DEFAULT_IMGSZ": "320",
    }
    with run_server(env, root / "server.log") as url:
        yield url


def classes(url: str, model: str, **params: str) -> set[str]:
    response = httpx.post(
        f"{url}/v1/predict/{model}",
        params=params,
        files={"file": ("i.jpg", jpeg(shapes_image()))},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return {d["class_name"] for d in response.json()["images"][0]["detections"]}


def test_registry_listing(mlflow_server: str) -> None:
    models = {m["name"]: m for m in httpx.get(f"{mlflow_server}/v1/models", timeout=60).json()["models"]}
    entry = models["mlyolo"]
    assert entry["source"] == "mlflow"
    assert [v["version"] for v in entry["versions"]] == ["1", "2"]
    assert entry["aliases"] == {"champion": "2"}


def test_versions_and_aliases(mlflow_server: str) -> None:
    assert classes(mlflow_server, "mlyolo", version="1") == {"dog"}
    assert classes(mlflow_server, "mlyolo@champion") == {"circle"}
    assert classes(mlflow_server, "mlyolo", version="champion") == {"circle"}
    missing = httpx.post(
        f"{mlflow_server}/v1/predict/mlyolo@staging",
        files={"file": ("i.jpg", jpeg(shapes_image()))},
        timeout=60,
    )
    assert missing.status_code == 404 and "champion" in missing.json()["error"]
