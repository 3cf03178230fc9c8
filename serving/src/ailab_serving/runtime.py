"""Per-device defaults: which engine, how many workers and threads, whether batching pays."""

from __future__ import annotations

from dataclasses import dataclass

from .settings import Settings


@dataclass(frozen=True)
class RuntimePlan:
    device: str  # "cpu" or "cuda"
    backend: str  # "torch" or "onnxruntime"
    half: bool
    workers: int
    threads_per_worker: int
    max_batch_size: int
    max_batch_wait_ms: float


def plan_runtime(settings: Settings, *, cuda_available: bool, cpu_count: int) -> RuntimePlan:
    """Resolve the ``auto`` settings for the machine.

    On CPU a batch of 8 costs about 8 single passes and mixed shapes get padded to full squares, so
    batching loses; what pays is running one image per core in parallel (one worker per core, one
    intra-op thread each): torch's intra-op parallelism on a small model scales badly and collapses
    when another process takes a core. On CUDA one worker with batches of 8 keeps the GPU busy.
    """
    if settings.device == "cuda" and not cuda_available:
        raise RuntimeError("AILAB_SERVE_DEVICE=cuda but torch sees no CUDA device")
    device = "cuda" if settings.device == "cuda" or (settings.device == "auto" and cuda_available) else "cpu"
    if settings.backend == "auto":
        backend = "onnxruntime" if device == "cpu" else "torch"
    else:
        backend = settings.backend
    cores = max(1, cpu_count)
    if device == "cpu":
        workers = settings.workers or cores
        threads = settings.threads_per_worker or max(1, cores // workers)
        batch = settings.max_batch_size or 1
        half = False if settings.half is None else settings.half
    else:
        workers = settings.workers or 1
        threads = settings.threads_per_worker or 1
        batch = settings.max_batch_size or 8
        half = True if settings.half is None else settings.half
    if half and device == "cpu":
        raise RuntimeError("FP16 (AILAB_SERVE_HALF) needs device=cuda")
    return RuntimePlan(
        device=device,
        backend=backend,
        half=half,
        workers=workers,
        threads_per_worker=threads,
        max_batch_size=batch,
        max_batch_wait_ms=settings.max_batch_wait_ms,
    )
