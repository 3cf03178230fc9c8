"""The inference queue: a bounded first-come queue, dynamic batching, and the worker threads.

Model objects are not thread-safe and inference blocks, so inference runs in worker threads, never on
the event loop. Requests queue in arrival order; a worker takes the oldest job and, when batching is
on, the next jobs for the same model and input shape (up to ``max_batch``, waiting at most
``max_wait_s`` for more), so one forward pass serves them all.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import math
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """The queue holds ``maxsize`` jobs; the caller answers 429 with Retry-After."""


class QueueClosedError(RuntimeError):
    """The server is shutting down; the caller answers 503."""


class QueueDeadlineError(RuntimeError):
    """The job waited past its queue deadline and was dropped before inference; the caller answers 429."""


@dataclass
class Job:
    """One image waiting for a forward pass."""

    key: Hashable  # jobs with equal keys may share a batch (same model, same input shape)
    payload: Any  # what the runner needs (model, letterboxed array, parameters)
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    enqueued: float = field(default_factory=time.perf_counter)
    started: float = 0.0
    expires: float = math.inf  # perf_counter time after which the job is dropped, not inferred

    def cancel(self) -> None:
        """Mark as abandoned (the client timed out); a worker skips it."""
        self.future.cancel()


class BatchQueue:
    """Bounded FIFO of jobs with batch taking; pure threading, no asyncio.

    The bound counts queued jobs plus *reserved* places: a request reserves one place per image
    before its images are decoded, so a request that will be refused is refused before it costs any
    decoding, and an admitted one cannot be refused later.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._jobs: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._reserved = 0

    def __len__(self) -> int:
        return len(self._jobs)

    @property
    def waiting(self) -> int:
        """Images admitted and not yet taken by a worker: queued plus reserved."""
        return len(self._jobs) + self._reserved

    def reserve(self, count: int) -> None:
        """Hold ``count`` places for images still being prepared, or refuse them all."""
        with self._cond:
            if self._closed:
                raise QueueClosedError("server is shutting down")
            if self.waiting + count > self.maxsize:
                raise QueueFullError(
                    f"inference queue full ({self.waiting} of {self.maxsize} images waiting, "
                    f"{count} more asked)"
                )
            self._reserved += count

    def release(self, count: int) -> None:
        """Give back places reserved for images that will not be queued (a failed decode)."""
        with self._cond:
            self._reserved -= min(count, self._reserved)

    def put(self, job: Job, *, reserved: bool = False) -> None:
        """Queue a job, into a place reserved earlier or, without one, into a free place."""
        with self._cond:
            if self._closed:
                raise QueueClosedError("server is shutting down")
            if reserved:
                self._reserved -= 1
            elif self.waiting >= self.maxsize:
                raise QueueFullError(f"inference queue full ({self.maxsize} images waiting)")
            self._jobs.append(job)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def take(self, max_batch: int, max_wait_s: float, poll_s: float = 0.5) -> list[Job]:
        """Block for the oldest live job, then gather compatible ones; [] when closed or idle."""
        with self._cond:
            deadline = time.monotonic() + poll_s
            while True:
                self._drop_dead()
                if self._jobs:
                    break
                if self._closed:
                    return []
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)
            batch = [self._jobs.popleft()]
            if max_batch == 1:
                return batch
            until = time.monotonic() + max_wait_s
            while True:
                self._gather(batch, max_batch)
                remaining = until - time.monotonic()
                if len(batch) >= max_batch or remaining <= 0 or self._closed:
                    return batch
                self._cond.wait(remaining)

    def _gather(self, batch: list[Job], max_batch: int) -> None:
        key = batch[0].key
        kept: collections.deque[Job] = collections.deque()
        now = time.perf_counter()
        while self._jobs:
            job = self._jobs.popleft()
            if _dead(job, now):
                continue
            if len(batch) < max_batch and job.key == key:
                batch.append(job)
            else:
                kept.append(job)
        self._jobs = kept

    def _drop_dead(self) -> None:
        """Drop abandoned jobs and fail those past their queue deadline, wherever they are."""
        now = time.perf_counter()
        self._jobs = collections.deque(job for job in self._jobs if not _dead(job, now))


def _dead(job: Job, now: float) -> bool:
    """True for a job a worker must skip: abandoned by its caller, or failed here as expired."""
    if job.future.cancelled():
        return True
    if now > job.expires and not job.future.done():
        waited_ms = (now - job.enqueued) * 1000
        message = f"waited {waited_ms:.0f} ms in the queue, past its deadline"
        job.future.set_exception(QueueDeadlineError(message))
    return job.future.done()


Runner = Callable[[list[Job], int], list[Any]]


class WorkerPool:
    """``workers`` threads that take batches from the queue and run them.

    ``runner(jobs, worker_index)`` returns one result per job; an exception fails the whole batch.
    ``on_batch(size, seconds)`` feeds the metrics.
    """

    def __init__(
        self,
        queue: BatchQueue,
        runner: Runner,
        *,
        workers: int,
        max_batch: int,
        max_wait_s: float,
        on_batch: Callable[[int, float], None] | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> None:
        self.queue = queue
        self._runner = runner
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._on_start = on_start
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(i,), name=f"inference-{i}", daemon=True)
            for i in range(workers)
        ]
        self.busy = 0
        self._busy_lock = threading.Lock()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.queue.close()
        for thread in self._threads:
            thread.join(timeout)

    def _loop(self, index: int) -> None:
        if self._on_start:
            self._on_start(index)
        while not self._stop.is_set():
            jobs = self.queue.take(self._max_batch, self._max_wait_s)
            live = [job for job in jobs if job.future.set_running_or_notify_cancel()]
            if not live:
                continue
            with self._busy_lock:
                self.busy += 1
            started = time.perf_counter()
            for job in live:
                job.started = started
            try:
                results = self._runner(live, index)
            except Exception as exc:  # a failed batch fails its jobs, never the worker
                log.exception("inference batch failed")
                for job in live:
                    job.future.set_exception(exc)
            else:
                for job, result in zip(live, results, strict=True):
                    job.future.set_result(result)
            finally:
                with self._busy_lock:
                    self.busy -= 1
            if self._on_batch:
                self._on_batch(len(live), time.perf_counter() - started)


def stack(arrays: list[np.ndarray]) -> np.ndarray:
    """Stack CHW arrays into NCHW without a copy for a batch of one."""
    if len(arrays) == 1:
        return arrays[0][None]
    return np.stack(arrays)
