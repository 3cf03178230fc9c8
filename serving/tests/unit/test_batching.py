"""The bounded first-come queue, batch gathering and the worker pool."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from ailab_serving.batching import (
    BatchQueue,
    Job,
    QueueClosedError,
    QueueDeadlineError,
    QueueFullError,
    WorkerPool,
    stack,
)


def job(key: str, value: int = 0) -> Job:
    return Job(key=key, payload=value)


def test_full_queue_refuses() -> None:
    queue = BatchQueue(2)
    queue.put(job("a"))
    queue.put(job("a"))
    with pytest.raises(QueueFullError):
        queue.put(job("a"))


def test_batch_of_one_is_first_come() -> None:
    queue = BatchQueue(10)
    for i in range(3):
        queue.put(job("a", i))
    assert [queue.take(1, 0)[0].payload for _ in range(3)] == [0, 1, 2]


def test_batch_gathers_same_key_and_keeps_the_others_in_order() -> None:
    queue = BatchQueue(10)
    for key, value in [("a", 0), ("b", 1), ("a", 2), ("b", 3), ("a", 4)]:
        queue.put(job(key, value))
    assert [j.payload for j in queue.take(8, 0)] == [0, 2, 4]
    assert [j.payload for j in queue.take(8, 0)] == [1, 3]


def test_batch_is_bounded_by_max_batch() -> None:
    queue = BatchQueue(10)
    for i in range(5):
        queue.put(job("a", i))
    assert [j.payload for j in queue.take(3, 0)] == [0, 1, 2]
    assert [j.payload for j in queue.take(3, 0)] == [3, 4]


def test_batch_waits_at_most_max_wait_for_more() -> None:
    queue = BatchQueue(10)
    queue.put(job("a", 0))
    threading.Timer(0.05, lambda: queue.put(job("a", 1))).start()
    started = time.monotonic()
    batch = queue.take(4, 0.5)
    # The late job joined; the batch returned at the deadline, not earlier, since it was not full.
    assert [j.payload for j in batch] == [0, 1]
    assert 0.4 < time.monotonic() - started < 2


def test_cancelled_jobs_are_skipped() -> None:
    queue = BatchQueue(10)
    first, second = job("a", 0), job("a", 1)
    queue.put(first)
    queue.put(second)
    first.cancel()
    assert [j.payload for j in queue.take(1, 0)] == [1]


def test_reserved_places_count_against_the_bound_and_are_never_refused_later() -> None:
    queue = BatchQueue(3)
    queue.reserve(2)
    assert queue.waiting == 2 and len(queue) == 0
    with pytest.raises(QueueFullError, match="2 of 3 images waiting, 2 more asked"):
        queue.reserve(2)  # all or nothing: one place is free, two are asked
    queue.put(job("a"))  # the one free place
    with pytest.raises(QueueFullError):
        queue.put(job("a"))
    queue.put(job("a"), reserved=True)  # a reserved place is always there
    queue.put(job("a"), reserved=True)
    assert queue.waiting == len(queue) == 3


def test_released_places_free_the_queue() -> None:
    queue = BatchQueue(2)
    queue.reserve(2)
    queue.release(2)
    assert queue.waiting == 0
    queue.reserve(2)


def test_expired_jobs_fail_before_inference_wherever_they_wait() -> None:
    queue = BatchQueue(10)
    head = Job(key="a", payload=0, expires=time.perf_counter() - 1)
    fresh = job("a", 1)
    behind = Job(key="a", payload=2, expires=time.perf_counter() - 1)
    for j in (head, fresh, behind):
        queue.put(j)
    assert [j.payload for j in queue.take(4, 0)] == [1]
    for expired in (head, behind):
        with pytest.raises(QueueDeadlineError, match="past its deadline"):
            expired.future.result(0)
    assert queue.waiting == 0


def test_take_returns_empty_when_idle_or_closed() -> None:
    queue = BatchQueue(10)
    assert queue.take(1, 0, poll_s=0.05) == []
    queue.close()
    assert queue.take(1, 0) == []
    with pytest.raises(QueueClosedError):
        queue.put(job("a"))


def test_pool_runs_batches_and_isolates_failures() -> None:
    queue = BatchQueue(100)
    seen: list[int] = []

    def runner(jobs: list[Job], worker: int) -> list[int]:
        if any(j.payload < 0 for j in jobs):
            raise ValueError("bad input")
        seen.append(len(jobs))
        return [j.payload * 10 for j in jobs]

    pool = WorkerPool(queue, runner, workers=2, max_batch=4, max_wait_s=0.001)
    jobs = [job("a", i) for i in range(10)]
    bad = job("b", -1)
    for j in [*jobs, bad]:
        queue.put(j)
    pool.start()
    try:
        assert [j.future.result(5) for j in jobs] == [i * 10 for i in range(10)]
        with pytest.raises(ValueError, match="bad input"):
            bad.future.result(5)
        # The pool survived the failed batch.
        late = job("a", 7)
        queue.put(late)
        assert late.future.result(5) == 70
        assert max(seen) > 1  # batches formed
    finally:
        pool.stop()


def test_stack_adds_the_batch_axis() -> None:
    a = np.zeros((3, 4, 4), np.float32)
    assert stack([a]).shape == (1, 3, 4, 4)
    assert stack([a, a]).shape == (2, 3, 4, 4)
