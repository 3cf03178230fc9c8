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


@dataclass
class Job:
    """One image waiting for a forward pass."""

    key: Hashable  # jobs with equal keys may share a batch (same model, same input shape)
    payload: Any  # what the runner needs (model, letterboxed array, parameters)
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    enqueued: float = field(default_factory=time.perf_counter)
    started: float = 0.0

    def cancel(self) -> None:
        """Mark as abandoned (the client timed out); a worker skips it."""
        self.future.cancel()


class BatchQueue:
    """Bounded FIFO of jobs with batch taking; pure threading, no asyncio."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._jobs: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        return len(self._jobs)

    def put(self, job: Job) -> None:
        with self._cond:
            if self._closed:
                raise QueueClosedError("server is shutting down")
            if len(self._jobs) >= self.maxsize:
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
                self._drop_cancelled()
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
        while self._jobs:
            job = self._jobs.popleft()
            if job.future.cancelled():
                continue
            if len(batch) < max_batch and job.key == key:
                batch.append(job)
            else:
                kept.append(job)
        self._jobs = kept

    def _drop_cancelled(self) -> None:
        while self._jobs and self._jobs[0].future.cancelled():
            self._jobs.popleft()


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
