"""The inference service's deadlines and backpressure, with a stand-in model (no network, no weights)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest
from ailab_serving.detection import PredictParams
from ailab_serving.engines import ModelInfo
from ailab_serving.inference import InferenceService, InferenceTimeoutError, OverloadedError
from ailab_serving.metrics import Metrics
from ailab_serving.model_sources import ModelVersion
from ailab_serving.runtime import RuntimePlan
from ailab_serving.settings import Settings

PARAMS = PredictParams(conf=0.25, iou=0.7, imgsz=64, max_det=10)


def fake_model() -> SimpleNamespace:
    info = ModelInfo(task="detect", names={0: "a"}, stride=32, imgsz=64, dynamic=True, end2end=False)
    return SimpleNamespace(
        key=("m", "1"), version=ModelVersion("m", "1", "local", {}), engine=SimpleNamespace(info=info)
    )


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> Iterator[InferenceService]:
    settings = Settings(request_timeout_s=0.3, queue_size=2, max_inflight_requests=1)
    plan = RuntimePlan("cpu", "onnxruntime", False, 1, 1, 1, 0.0)
    svc = InferenceService(settings, plan, Metrics())

    def slow_batch(jobs: list, worker: int) -> list:
        time.sleep(0.5)
        return [(np.zeros((0, 6), np.float32), 0.5, len(jobs)) for _ in jobs]

    monkeypatch.setattr(svc, "_run_batch", slow_batch)
    svc.pool._runner = slow_batch
    svc.start()
    yield svc
    svc.stop()


def image() -> np.ndarray:
    return np.zeros((48, 64, 3), np.uint8)


def test_deadline_gives_timeout(service: InferenceService) -> None:
    with pytest.raises(InferenceTimeoutError):
        asyncio.run(service.predict(fake_model(), [image()], PARAMS))


def test_full_queue_gives_429_with_retry_after(service: InferenceService) -> None:
    async def scenario() -> list[object]:
        calls = [
            service.predict(fake_model(), [image()], PARAMS, deadline=time.monotonic() + 5) for _ in range(5)
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(scenario())
    refused = [r for r in results if isinstance(r, OverloadedError)]
    assert refused and all(r.status == 429 and r.retry_after_s >= 1 for r in refused)
    assert any(isinstance(r, list) for r in results)  # the first ones were served


def test_inflight_bound_gives_503(service: InferenceService) -> None:
    async def scenario() -> None:
        async with service.admit():
            with pytest.raises(OverloadedError) as err:
                async with service.admit():
                    pass
            assert err.value.status == 503

    asyncio.run(scenario())
