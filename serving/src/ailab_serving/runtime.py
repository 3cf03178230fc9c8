"""Per-device defaults: which engine, how many workers and threads, whether batching pays."""

from __future__ import annotations

import importlib.util
from collections.abc import Collection
from dataclasses import dataclass

from .settings import Settings

# CPU runtimes for exported (ONNX) models, fastest first: forward pass of YOLOv8n at 640x480 with one
# single-threaded stream per core (serving/README.md, "Performance").
CPU_RUNTIMES = ("openvino", "onnxruntime")
# ``.pt`` files reach the CPU runtimes through an ONNX export, which needs the onnx package.
EXPORTER = "onnx"


def installed_packages() -> frozenset[str]:
    """Which of the optional runtime packages this environment can import."""
    return frozenset(name for name in (*CPU_RUNTIMES, EXPORTER) if importlib.util.find_spec(name))


@dataclass(frozen=True)
class RuntimePlan:
    device: str  # "cpu" or "cuda"
    backend: str  # "torch" or "onnxruntime"
    half: bool
    workers: int
    threads_per_worker: int
    max_batch_size: int
    max_batch_wait_ms: float
    reason: str = ""  # why this backend: logged at start-up


def _cpu_backend(installed: Collection[str]) -> tuple[str, str]:
    if EXPORTER not in installed:
        return "torch", f"the {EXPORTER} package (needed to export .pt models) is not installed"
    for runtime in CPU_RUNTIMES:
        if runtime in installed:
            skipped = CPU_RUNTIMES[: CPU_RUNTIMES.index(runtime)]
            why = f" ({', '.join(skipped)} not installed)" if skipped else ""
            return runtime, f"fastest CPU runtime installed{why}"
    return "torch", f"none of {', '.join(CPU_RUNTIMES)} is installed"


def plan_runtime(
    settings: Settings,
    *,
    cuda_available: bool,
    cpu_count: int,
    installed: Collection[str] | None = None,
) -> RuntimePlan:
    """Resolve the ``auto`` settings for the machine.

    On CPU a batch of 8 costs about 8 single passes and mixed shapes get padded to full squares, so
    batching loses; what pays is running one image per core in parallel (one worker per core, one
    intra-op thread each): torch's intra-op parallelism on a small model scales badly and collapses
    when another process takes a core. On CUDA one worker with batches of 8 keeps the GPU busy.
    ``installed`` names the importable runtime packages (default: looked up).
    """
    installed = installed_packages() if installed is None else installed
    if settings.device == "cuda" and not cuda_available:
        raise RuntimeError("AILAB_SERVE_DEVICE=cuda but torch sees no CUDA device")
    device = "cuda" if settings.device == "cuda" or (settings.device == "auto" and cuda_available) else "cpu"
    if settings.backend != "auto":
        backend, reason = settings.backend, "AILAB_SERVE_BACKEND"
        missing = [p for p in (backend, EXPORTER) if backend in CPU_RUNTIMES and p not in installed]
        if missing:
            raise RuntimeError(
                f"AILAB_SERVE_BACKEND={backend} needs the package(s) {', '.join(missing)}: "
                f"pip install {' '.join(missing)}, or set AILAB_SERVE_BACKEND=auto"
            )
    elif device == "cpu":
        backend, reason = _cpu_backend(installed)
    else:
        backend, reason = "torch", "CUDA device"
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
        reason=reason,
    )
