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
from ailab_serving.images import ImageError
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


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[InferenceService, dict[str, int]]]:
    """A one-worker service whose forward pass takes 0.3 s; counts decodes and forward passes."""
    settings = Settings(request_timeout_s=10, queue_size=3, max_inflight_requests=50)
    svc = InferenceService(settings, RuntimePlan("cpu", "onnxruntime", False, 1, 1, 1, 0.0), Metrics())
    counts = {"prepared": 0, "inferred": 0}
    prepare = svc._prepare

    def counting_prepare(*args: object) -> object:
        counts["prepared"] += 1
        return prepare(*args)

    def slow_batch(jobs: list, worker: int) -> list:
        counts["inferred"] += len(jobs)
        time.sleep(0.3)
        return [(np.zeros((0, 6), np.float32), 0.3, len(jobs)) for _ in jobs]

    monkeypatch.setattr(svc, "_prepare", counting_prepare)
    svc.pool._runner = slow_batch
    svc.start()
    yield svc, counts
    svc.stop()


def rejected(svc: InferenceService, reason: str) -> float:
    return svc.metrics.registry.get_sample_value("ailab_rejected_total", {"reason": reason}) or 0.0


def test_refused_requests_cost_no_decoding(counted: tuple[InferenceService, dict[str, int]]) -> None:
    svc, counts = counted

    async def scenario() -> list[object]:
        calls = [svc.predict(fake_model(), [image()], PARAMS) for _ in range(8)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(scenario())
    served = [r for r in results if isinstance(r, list)]
    refused = [r for r in results if isinstance(r, OverloadedError)]
    assert len(served) == 3 and len(refused) == 5  # the queue holds 3 images
    assert all(r.status == 429 for r in refused)
    assert counts["prepared"] == 3  # only admitted images were decoded
    assert rejected(svc, "queue_full") == 5
    assert svc.queue.waiting == 0


def test_a_request_is_admitted_whole_or_refused_whole(
    counted: tuple[InferenceService, dict[str, int]],
) -> None:
    svc, counts = counted
    with pytest.raises(OverloadedError, match="queue full") as err:
        asyncio.run(svc.predict(fake_model(), [image()] * 4, PARAMS))
    assert err.value.status == 429
    assert counts["prepared"] == 0 and svc.queue.waiting == 0
    assert len(asyncio.run(svc.predict(fake_model(), [image()] * 3, PARAMS))) == 3


def test_a_failed_decode_gives_its_places_back(counted: tuple[InferenceService, dict[str, int]]) -> None:
    svc, _ = counted
    with pytest.raises(ImageError):
        asyncio.run(svc.predict(fake_model(), [b"not an image", b"nor this"], PARAMS))
    assert svc.queue.waiting == 0


def test_a_wait_estimated_past_the_queue_deadline_is_refused_at_once(
    counted: tuple[InferenceService, dict[str, int]],
) -> None:
    svc, counts = counted

    async def scenario() -> tuple[list[object], float]:
        first = asyncio.create_task(svc.predict(fake_model(), [image()], PARAMS))
        while not counts["inferred"]:  # until the worker runs it
            await asyncio.sleep(0.005)
        svc._image_seconds = 0.3  # as measured by the batches
        waiting = asyncio.create_task(svc.predict(fake_model(), [image()], PARAMS))
        await asyncio.sleep(0)
        started = time.perf_counter()
        with pytest.raises(OverloadedError, match="estimated queue wait 300 ms") as err:
            await svc.predict(fake_model(), [image()], PARAMS, max_queue_delay_s=0.2)
        refused_after = time.perf_counter() - started
        assert err.value.status == 429
        return await asyncio.gather(first, waiting), refused_after

    results, refused_after = asyncio.run(scenario())
    assert all(isinstance(r, list) for r in results)
    assert refused_after < 0.1  # not after waiting
    assert rejected(svc, "queue_delay") == 1
    assert counts["prepared"] == 2


def test_an_image_still_queued_at_its_deadline_is_dropped_before_inference(
    counted: tuple[InferenceService, dict[str, int]],
) -> None:
    svc, counts = counted
    svc._image_seconds = 0.001  # the estimate lets it in; the slow worker makes it wait anyway

    async def scenario() -> list[object]:
        first = asyncio.create_task(svc.predict(fake_model(), [image()], PARAMS))
        while not counts["inferred"]:
            await asyncio.sleep(0.005)
        late = svc.predict(fake_model(), [image()], PARAMS, max_queue_delay_s=0.05)
        return await asyncio.gather(first, late, return_exceptions=True)

    first, late = asyncio.run(scenario())
    assert isinstance(first, list)
    assert isinstance(late, OverloadedError) and late.status == 429
    assert "past its deadline" in str(late)
    assert counts["inferred"] == 1  # the late image never reached the model
    assert rejected(svc, "queue_timeout") == 1
