"""The inference service: admission, decode and letterbox in a thread pool, the queue, NMS, timings.

Every protocol (OIP v2, the friendly API, video) goes through ``InferenceService.predict``, so limits,
ordering, batching and metrics are the same for all. Decoding image *n+1* overlaps the forward pass
of image *n*: images of a request are prepared concurrently and each is queued as soon as it is ready.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .batching import BatchQueue, Job, QueueClosedError, QueueFullError, WorkerPool, stack
from .detection import PredictParams, run_nms, to_detections
from .images import Letterboxed, decode_image, letterbox, network_shape, round_imgsz
from .metrics import Metrics
from .model_store import LoadedModel
from .runtime import RuntimePlan
from .settings import Settings

log = logging.getLogger(__name__)


class OverloadedError(RuntimeError):
    """Refused by backpressure; ``status`` is 429 (queue full) or 503 (too many requests, stopping)."""

    def __init__(self, message: str, status: int, retry_after_s: float) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


class InferenceTimeoutError(TimeoutError):
    """The request's deadline passed before its images were inferred (504)."""


@dataclass
class _Payload:
    model: LoadedModel
    array: np.ndarray
    params: PredictParams


@dataclass
class ImageResult:
    width: int
    height: int
    detections: list[dict]
    timings_ms: dict[str, float]
    image: np.ndarray | None = None  # BGR, kept only when the caller wants to draw on it
    rows: np.ndarray = field(default_factory=lambda: np.zeros((0, 6), np.float32))
    letterbox: Letterboxed | None = None


class InferenceService:
    def __init__(self, settings: Settings, plan: RuntimePlan, metrics: Metrics) -> None:
        self.settings = settings
        self.plan = plan
        self.metrics = metrics
        self.queue = BatchQueue(settings.queue_size)
        self.pool = WorkerPool(
            self.queue,
            self._run_batch,
            workers=plan.workers,
            max_batch=plan.max_batch_size,
            max_wait_s=plan.max_batch_wait_ms / 1000,
            on_batch=self._on_batch,
            on_start=self._on_worker_start,
        )
        self._prep = concurrent.futures.ThreadPoolExecutor(
            settings.preprocess_threads, thread_name_prefix="preprocess"
        )
        self._inflight = 0
        self._batch_seconds = 0.1  # running estimate, for Retry-After
        self._stopping = False

    def start(self) -> None:
        self.pool.start()

    def stop(self) -> None:
        self._stopping = True
        self.pool.stop()
        self._prep.shutdown(wait=False, cancel_futures=True)

    # Admission -----------------------------------------------------------------------------------

    def retry_after_s(self) -> float:
        backlog = len(self.queue) / max(1, self.plan.workers * self.plan.max_batch_size)
        return max(1.0, math.ceil(backlog * self._batch_seconds))

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Bound the requests held in memory (decoded images, uploads)."""
        if self._stopping:
            self.metrics.rejected.labels("stopping").inc()
            raise OverloadedError("server is shutting down", 503, 5)
        if self._inflight >= self.settings.max_inflight_requests:
            self.metrics.rejected.labels("inflight").inc()
            raise OverloadedError(
                f"too many requests in flight ({self._inflight})", 503, self.retry_after_s()
            )
        self._inflight += 1
        self.metrics.inflight.set(self._inflight)
        try:
            yield
        finally:
            self._inflight -= 1
            self.metrics.inflight.set(self._inflight)

    # Prediction ----------------------------------------------------------------------------------

    async def predict(
        self,
        model: LoadedModel,
        images: list[bytes | np.ndarray],
        params: PredictParams,
        *,
        keep_images: bool = False,
        deadline: float | None = None,
    ) -> list[ImageResult]:
        """Infer every image; the results keep the order of ``images``."""
        if deadline is None:
            deadline = time.monotonic() + self.settings.request_timeout_s
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(self._one(model, image, params, keep_images, deadline))
                    for image in images
                ]
        except ExceptionGroup as failed:
            # One bad image fails the request (the others are cancelled); answer with its error.
            raise failed.exceptions[0] from None
        return [task.result() for task in tasks]

    async def _one(
        self,
        model: LoadedModel,
        image: bytes | np.ndarray,
        params: PredictParams,
        keep_image: bool,
        deadline: float,
    ) -> ImageResult:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        info = model.engine.info
        if info.dynamic:
            rect = self.plan.max_batch_size == 1
            imgsz = round_imgsz(params.imgsz, info.stride)
        else:
            rect, imgsz = False, info.imgsz  # a fixed-shape export only takes its own size
        decoded, lb = await loop.run_in_executor(self._prep, self._prepare, image, imgsz, info.stride, rect)
        t1 = time.perf_counter()
        # Batchable jobs share a key; a fixed-shape export (batch 1) never batches.
        key = (model.key, lb.shape) if info.dynamic else (model.key, id(lb))
        job = Job(key=key, payload=_Payload(model, lb.array, params))
        try:
            self.queue.put(job)
        except QueueFullError as exc:
            self.metrics.rejected.labels("queue_full").inc()
            raise OverloadedError(str(exc), 429, self.retry_after_s()) from exc
        except QueueClosedError as exc:
            raise OverloadedError(str(exc), 503, 5) from exc
        self.metrics.queue_depth.set(len(self.queue))
        try:
            rows, infer_s, batch = await asyncio.wait_for(
                asyncio.wrap_future(job.future), max(0.0, deadline - time.monotonic())
            )
        except TimeoutError as exc:
            job.cancel()
            raise InferenceTimeoutError(
                f"inference did not finish within {self.settings.request_timeout_s:g} s"
            ) from exc
        finally:
            self.metrics.queue_depth.set(len(self.queue))
        t2 = time.perf_counter()
        detections = to_detections(rows, lb, info.names)
        t3 = time.perf_counter()
        self.metrics.images.labels(model.version.name).inc()
        queue_s = max(0.0, job.started - job.enqueued)
        self.metrics.queue_seconds.observe(queue_s)
        return ImageResult(
            width=lb.original_shape[1],
            height=lb.original_shape[0],
            detections=detections,
            timings_ms={
                "preprocess": round((t1 - t0) * 1000, 2),
                "queue": round(queue_s * 1000, 2),
                "inference": round(infer_s * 1000, 2),
                "postprocess": round((t3 - t2) * 1000, 2),
                "batch_size": batch,
            },
            image=decoded if keep_image else None,
            rows=rows,
            letterbox=lb,
        )

    def _prepare(
        self, image: bytes | np.ndarray, imgsz: int, stride: int, rect: bool
    ) -> tuple[np.ndarray, Letterboxed]:
        array = decode_image(image, self.settings.max_image_pixels) if isinstance(image, bytes) else image
        shape = network_shape(array.shape[:2], imgsz, stride, rect=rect)
        return array, letterbox(array, shape)

    # Worker side ---------------------------------------------------------------------------------

    def _on_worker_start(self, index: int) -> None:
        # Intra-op threads are per calling thread in torch; set them in each worker.
        torch.set_num_threads(self.plan.threads_per_worker)
        log.debug("inference worker started", extra={"worker": index, "pid": os.getpid()})

    def _run_batch(self, jobs: list[Job], worker: int) -> list[tuple[np.ndarray, float, int]]:
        started = time.perf_counter()
        model: LoadedModel = jobs[0].payload.model
        info = model.engine.info
        raw = model.engine.forward(stack([job.payload.array for job in jobs]), worker)
        results = []
        for index, job in enumerate(jobs):
            (rows,) = run_nms(
                raw[index : index + 1], job.payload.params, len(info.names), end2end=info.end2end
            )
            results.append(rows)
        seconds = time.perf_counter() - started
        return [(rows, seconds, len(jobs)) for rows in results]

    def _on_batch(self, size: int, seconds: float) -> None:
        self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * seconds
        self.metrics.on_batch(size, seconds)
        self.metrics.queue_depth.set(len(self.queue))
