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

from .batching import (
    BatchQueue,
    Job,
    QueueClosedError,
    QueueDeadlineError,
    QueueFullError,
    WorkerPool,
    stack,
)
from .detection import PredictParams, run_nms, to_detections
from .images import Letterboxed, decode_image, letterbox, network_shape, round_imgsz
from .metrics import Metrics
from .model_store import LoadedModel
from .runtime import RuntimePlan
from .settings import Settings

log = logging.getLogger(__name__)


class OverloadedError(RuntimeError):
    """Refused by backpressure: ``status`` 429 (queue full, queue deadline) or 503 (in flight, stopping)."""

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
        self._image_seconds = 0.1  # running estimate of one image's forward pass, for queue deadlines
        self._stopping = False

    def start(self) -> None:
        self.pool.start()

    def stop(self) -> None:
        self._stopping = True
        self.pool.stop()
        self._prep.shutdown(wait=False, cancel_futures=True)

    # Admission -----------------------------------------------------------------------------------

    def retry_after_s(self) -> float:
        backlog = self.queue.waiting / max(1, self.plan.workers * self.plan.max_batch_size)
        return max(1.0, math.ceil(backlog * self._batch_seconds))

    def queue_delay_s(self, requested_ms: float | None) -> float | None:
        """The queue deadline of a request: its own (``requested_ms``) or the server's, None = none."""
        ms = self.settings.max_queue_delay_ms if requested_ms is None else requested_ms
        return None if ms is None else ms / 1000

    def estimated_wait_s(self, images: int = 1) -> float:
        """How long the last of ``images`` new images would wait: the queue ahead over the workers."""
        ahead = self.queue.waiting + images - 1
        return ahead * self._image_seconds / max(1, self.plan.workers)

    def _refuse(self, reason: str, message: str, status: int) -> OverloadedError:
        self.metrics.rejected.labels(reason).inc()
        retry = 5.0 if reason == "stopping" else self.retry_after_s()
        return OverloadedError(message, status, retry)

    def gate(self, images: int = 1, max_queue_delay_s: float | None = None) -> None:
        """Refuse at once what cannot be served, before a byte of the body is read or decoded.

        Cheap on purpose (a few comparisons): under overload most requests end here, and every
        microsecond they cost is taken from the workers.
        """
        if self._stopping:
            raise self._refuse("stopping", "server is shutting down", 503)
        if self._inflight >= self.settings.max_inflight_requests:
            raise self._refuse("inflight", f"too many requests in flight ({self._inflight})", 503)
        if self.queue.waiting + images > self.queue.maxsize:
            waiting, size = self.queue.waiting, self.queue.maxsize
            raise self._refuse("queue_full", f"inference queue full ({waiting} of {size} images)", 429)
        self._check_delay(images, max_queue_delay_s)

    def _check_delay(self, images: int, max_queue_delay_s: float | None) -> None:
        if max_queue_delay_s is not None:
            wait = self.estimated_wait_s(images)
            if wait > max_queue_delay_s:
                raise self._refuse(
                    "queue_delay",
                    f"estimated queue wait {wait * 1000:.0f} ms is over the deadline of "
                    f"{max_queue_delay_s * 1000:.0f} ms",
                    429,
                )

    @contextlib.asynccontextmanager
    async def admit(self, max_queue_delay_s: float | None = None) -> AsyncIterator[None]:
        """Bound the requests held in memory (uploads, decoded images); refuse early when full."""
        self.gate(1, max_queue_delay_s)
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
        max_queue_delay_s: float | None = None,
    ) -> list[ImageResult]:
        """Infer every image; the results keep the order of ``images``.

        Places in the queue are reserved for all images before any is decoded: a request is refused
        whole (429) or admitted whole, and a refusal costs no decoding. With ``max_queue_delay_s`` a
        request whose estimated wait is longer is refused at once, and an image still queued when
        it runs out is dropped before inference (429).
        """
        if deadline is None:
            deadline = time.monotonic() + self.settings.request_timeout_s
        # The queue bound itself is checked by the reservation, atomically with taking the places.
        self._check_delay(len(images), max_queue_delay_s)
        try:
            self.queue.reserve(len(images))
        except QueueFullError as exc:
            raise self._refuse("queue_full", str(exc), 429) from exc
        except QueueClosedError as exc:
            raise self._refuse("stopping", str(exc), 503) from exc
        reservation = _Reservation(self.queue, len(images))
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(
                        self._one(
                            model,
                            image,
                            params,
                            keep_image=keep_images,
                            deadline=deadline,
                            max_queue_delay_s=max_queue_delay_s,
                            reservation=reservation,
                        )
                    )
                    for image in images
                ]
        except ExceptionGroup as failed:
            # One bad image fails the request (the others are cancelled); answer with its error.
            raise failed.exceptions[0] from None
        finally:
            reservation.release_rest()
        return [task.result() for task in tasks]

    async def _one(
        self,
        model: LoadedModel,
        image: bytes | np.ndarray,
        params: PredictParams,
        *,
        keep_image: bool,
        deadline: float,
        max_queue_delay_s: float | None,
        reservation: _Reservation,
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
        # The deadline bounds the time in the queue, counted from the moment the image enters it.
        expires = math.inf if max_queue_delay_s is None else time.perf_counter() + max_queue_delay_s
        job = Job(key=key, payload=_Payload(model, lb.array, params), expires=expires)
        try:
            reservation.put(job)
        except QueueClosedError as exc:
            raise self._refuse("stopping", str(exc), 503) from exc
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
        except QueueDeadlineError as exc:
            self.metrics.queue_seconds.observe(time.perf_counter() - job.enqueued)
            raise self._refuse("queue_timeout", str(exc), 429) from exc
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
        self._image_seconds = 0.8 * self._image_seconds + 0.2 * seconds / max(1, size)
        self.metrics.on_batch(size, seconds)
        self.metrics.queue_depth.set(len(self.queue))


class _Reservation:
    """The queue places one request reserved; each image takes one, the rest go back at the end."""

    def __init__(self, queue: BatchQueue, count: int) -> None:
        self._queue = queue
        self._left = count

    def put(self, job: Job) -> None:
        self._queue.put(job, reserved=True)
        self._left -= 1

    def release_rest(self) -> None:
        if self._left > 0:
            self._queue.release(self._left)
            self._left = 0
