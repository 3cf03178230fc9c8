"""Prometheus metrics, in a registry owned by the app (no process-global collectors)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "ailab_requests_total", "HTTP requests", ["route", "method", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "ailab_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "ailab_inference_duration_seconds",
            "Forward pass + NMS per batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_seconds = Histogram(
            "ailab_queue_wait_seconds",
            "Time an image waited for a worker",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "ailab_batch_size", "Images per forward pass", buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32), registry=r
        )
        self.queue_depth = Gauge("ailab_queue_depth", "Images waiting for inference", registry=r)
        self.inflight = Gauge("ailab_inflight_requests", "Requests being served", registry=r)
        self.images = Counter("ailab_images_total", "Images inferred", ["model"], registry=r)
        self.rejected = Counter(
            "ailab_rejected_total", "Requests refused by backpressure", ["reason"], registry=r
        )
        self.model_loads = Counter("ailab_model_loads_total", "Model loads", ["model"], registry=r)
        self.model_load_seconds = Histogram(
            "ailab_model_load_seconds",
            "Model load + warm-up time",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=r,
        )
        self.model_unloads = Counter(
            "ailab_model_unloads_total", "Model unloads", ["model", "reason"], registry=r
        )
        self.cache_hits = Counter(
            "ailab_model_cache_hits_total", "Requests served by a loaded model", registry=r
        )
        self.cache_misses = Counter("ailab_model_cache_misses_total", "Requests that had to load", registry=r)
        self.loaded_models = Gauge("ailab_loaded_models", "Models in the cache", registry=r)

    def on_load(self, model: str, seconds: float) -> None:
        self.model_loads.labels(model).inc()
        self.model_load_seconds.observe(seconds)

    def on_evict(self, model: str, reason: str) -> None:
        self.model_unloads.labels(model, reason).inc()

    def on_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference_seconds.observe(seconds)
