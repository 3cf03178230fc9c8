"""Settings from the environment and flags, and the per-device runtime plan."""

from __future__ import annotations

import pytest
from ailab_serving.cli import build_parser, settings_from_args
from ailab_serving.runtime import plan_runtime
from ailab_serving.settings import Settings
from pydantic import ValidationError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os  # noqa: PLC0415

    for name in list(os.environ):
        if name.startswith("AILAB_SERVE_") or name == "MLFLOW_TRACKING_URI":
            monkeypatch.delenv(name)


def test_defaults() -> None:
    s = Settings()
    assert (s.host, s.port, s.device, s.api_key, s.cors_origins) == ("127.0.0.1", 8000, "auto", None, [])


def test_environment_with_prefix_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AILAB_SERVE_PORT", "9001")
    monkeypatch.setenv("AILAB_SERVE_MODEL_DIR", "/models")
    monkeypatch.setenv("AILAB_SERVE_CORS_ORIGINS", "http://a.example, http://b.example")
    monkeypatch.setenv("AILAB_SERVE_PRELOAD", "yolo,animals@champion")
    monkeypatch.setenv("AILAB_SERVE_API_KEY", "")  # rendered-but-unset values from Helm
    s = Settings()
    assert s.port == 9001
    assert str(s.model_dir) == "/models"
    assert s.cors_origins == ["http://a.example", "http://b.example"]
    assert s.preload == ["yolo", "animals@champion"]
    assert s.api_key is None


def test_mlflow_uri_falls_back_to_standard_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert Settings().mlflow_uri == "http://mlflow:5000"
    monkeypatch.setenv("AILAB_SERVE_MLFLOW_URI", "http://other:5000")
    assert Settings().mlflow_uri == "http://other:5000"


@pytest.mark.parametrize(
    ("name", "value"),
    [("AILAB_SERVE_PORT", "0"), ("AILAB_SERVE_DEVICE", "tpu"), ("AILAB_SERVE_DEFAULT_CONF", "2")],
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AILAB_SERVE_PORT", "9001")
    args = build_parser().parse_args(
        ["serve", "--host", "0.0.0.0", "--port", "8000", "--max-loaded-models", "5"]
    )
    s = settings_from_args(args)
    assert (s.host, s.port, s.max_loaded_models) == ("0.0.0.0", 8000, 5)


def test_cli_requires_a_subcommand() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([])


def test_cpu_plan_runs_one_single_threaded_worker_per_core_without_batching() -> None:
    plan = plan_runtime(Settings(), cuda_available=False, cpu_count=2)
    assert (plan.device, plan.backend, plan.workers, plan.threads_per_worker) == ("cpu", "openvino", 2, 1)
    assert (plan.max_batch_size, plan.half) == (1, False)


@pytest.mark.parametrize(
    ("installed", "backend", "reason"),
    [
        ({"openvino", "onnxruntime", "onnx"}, "openvino", "fastest CPU runtime installed"),
        ({"onnxruntime", "onnx"}, "onnxruntime", "(openvino not installed)"),
        ({"openvino", "onnxruntime"}, "torch", "onnx package"),
        (set(), "torch", "onnx package"),
        ({"onnx"}, "torch", "none of openvino, onnxruntime"),
    ],
)
def test_cpu_plan_falls_back_to_what_is_installed_and_says_why(
    installed: set[str], backend: str, reason: str
) -> None:
    plan = plan_runtime(Settings(), cuda_available=False, cpu_count=2, installed=installed)
    assert plan.backend == backend
    assert reason in plan.reason


def test_an_explicit_backend_that_is_not_installed_fails_with_the_fix() -> None:
    with pytest.raises(RuntimeError, match=r"needs the package.*openvino.*pip install openvino"):
        plan_runtime(
            Settings(backend="openvino"), cuda_available=False, cpu_count=2, installed={"onnx", "onnxruntime"}
        )


def test_cuda_plan_batches_in_fp16_with_torch() -> None:
    plan = plan_runtime(Settings(), cuda_available=True, cpu_count=16)
    assert (plan.device, plan.backend, plan.workers, plan.max_batch_size, plan.half) == (
        "cuda",
        "torch",
        1,
        8,
        True,
    )


def test_explicit_settings_win() -> None:
    s = Settings(device="cpu", backend="torch", workers=1, threads_per_worker=2, max_batch_size=4)
    plan = plan_runtime(s, cuda_available=True, cpu_count=2)
    assert (plan.device, plan.backend, plan.workers, plan.threads_per_worker, plan.max_batch_size) == (
        "cpu",
        "torch",
        1,
        2,
        4,
    )


def test_cuda_requested_without_cuda_fails_clearly() -> None:
    with pytest.raises(RuntimeError, match="no CUDA"):
        plan_runtime(Settings(device="cuda"), cuda_available=False, cpu_count=2)
