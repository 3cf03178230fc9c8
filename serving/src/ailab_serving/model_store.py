"""The model store: a catalog over the sources and a bounded LRU cache of loaded engines.

Loading is lazy (first request), single-flight (concurrent first requests share one load), off the
event loop (a thread), followed by a warm-up pass. The cache is bounded by count and, on CUDA, by
memory; models idle longer than the timeout are unloaded. A model in use is never evicted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .engines import Engine, ModelInfo, OnnxEngine, OpenVinoEngine, TorchEngine, export_onnx
from .model_sources import CatalogEntry, ModelVersion, Source
from .runtime import RuntimePlan

log = logging.getLogger(__name__)


class ModelNotFoundError(LookupError):
    """Unknown model, version or alias (404)."""


class ModelLoadError(RuntimeError):
    """The model exists but could not be loaded (it is broken or unsupported)."""


def parse_model_ref(model: str, version: str | None) -> tuple[str, str | None]:
    """``name``, ``name@alias`` or ``name:version`` plus an optional explicit version/alias."""
    if "@" in model:
        name, _, alias = model.partition("@")
        return name, version or alias
    if ":" in model:
        name, _, ver = model.partition(":")
        return name, version or ver
    return model, version or None


def build_catalog(versions: list[ModelVersion]) -> dict[str, CatalogEntry]:
    """Merge source listings; the first source that names a model owns it (local, S3, MLflow)."""
    catalog: dict[str, CatalogEntry] = {}
    for mv in versions:
        entry = catalog.setdefault(mv.name, CatalogEntry(mv.name, mv.source))
        if entry.source != mv.source:
            continue
        entry.versions[mv.version] = mv
        for alias in mv.aliases:
            entry.aliases[alias] = mv.version
    return catalog


def resolve(catalog: dict[str, CatalogEntry], name: str, version: str | None) -> ModelVersion:
    entry = catalog.get(name)
    if entry is None:
        raise ModelNotFoundError(f"unknown model {name!r}; GET /v1/models lists the available ones")
    if version in (None, "", "latest"):
        return entry.versions[entry.latest]
    if version in entry.versions:
        return entry.versions[version]
    if version in entry.aliases:
        return entry.versions[entry.aliases[version]]
    raise ModelNotFoundError(
        f"model {name!r} has no version or alias {version!r} "
        f"(versions {sorted(entry.versions)}, aliases {sorted(entry.aliases)})"
    )


@dataclass
class LoadedModel:
    version: ModelVersion
    engine: Engine
    load_seconds: float
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    in_use: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.version.name, self.version.version)


class ModelStore:
    def __init__(
        self,
        sources: list[Source],
        plan: RuntimePlan,
        *,
        cache_dir: Path,
        catalog_ttl_s: float,
        max_loaded: int,
        gpu_memory_fraction: float,
        default_imgsz: int,
        warmup: bool,
        on_load: Callable[[str, float], None] | None = None,
        on_evict: Callable[[str, str], None] | None = None,
    ) -> None:
        self.sources = sources
        self.plan = plan
        self.cache_dir = cache_dir
        self.catalog_ttl_s = catalog_ttl_s
        self.max_loaded = max_loaded
        self.gpu_memory_fraction = gpu_memory_fraction
        self.default_imgsz = default_imgsz
        self.warmup = warmup
        self._on_load = on_load
        self._on_evict = on_evict
        self._catalog: dict[str, CatalogEntry] = {}
        self._catalog_at = float("-inf")
        self._catalog_lock = asyncio.Lock()
        self.source_errors: dict[str, str] = {}
        self._loaded: collections.OrderedDict[tuple[str, str], LoadedModel] = collections.OrderedDict()
        self._loading: dict[tuple[str, str], asyncio.Task[LoadedModel]] = {}
        # What a model turned out to be (task, classes), kept after eviction for the listing.
        self.known_info: dict[tuple[str, str], ModelInfo] = {}

    # Catalog -------------------------------------------------------------------------------------

    async def catalog(self, *, refresh: bool = False) -> dict[str, CatalogEntry]:
        async with self._catalog_lock:
            if refresh or time.monotonic() - self._catalog_at > self.catalog_ttl_s:
                self._catalog = await asyncio.to_thread(self._list_sources)
                self._catalog_at = time.monotonic()
            return self._catalog

    def _list_sources(self) -> dict[str, CatalogEntry]:
        versions: list[ModelVersion] = []
        for source in self.sources:
            try:
                versions.extend(source.list())
                self.source_errors.pop(source.kind, None)
            except Exception as exc:  # a source that is down must not hide the others
                log.warning("model source failed", extra={"source": source.kind, "error": str(exc)})
                self.source_errors[source.kind] = str(exc)
        return build_catalog(versions)

    async def resolve(self, model: str, version: str | None = None) -> ModelVersion:
        name, ver = parse_model_ref(model, version)
        try:
            return resolve(await self.catalog(), name, ver)
        except ModelNotFoundError:
            # A model uploaded a second ago should not wait for the TTL; refresh once, then decide.
            return resolve(await self.catalog(refresh=True), name, ver)

    def loaded(self) -> dict[tuple[str, str], LoadedModel]:
        return dict(self._loaded)

    # Cache ---------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def use(self, version: ModelVersion) -> AsyncIterator[LoadedModel]:
        """Hold a loaded model for the duration of a request (it cannot be evicted meanwhile)."""
        model = await self.get(version)
        model.in_use += 1
        try:
            yield model
        finally:
            model.in_use -= 1
            model.last_used = time.monotonic()

    async def get(self, version: ModelVersion) -> LoadedModel:
        key = (version.name, version.version)
        model = self._loaded.get(key)
        if model is not None:
            self._loaded.move_to_end(key)
            model.last_used = time.monotonic()
            return model
        task = self._loading.get(key)
        if task is None:
            # The load is its own task, not the first caller's: a client that disconnects must not
            # cancel a load that others wait for.
            task = asyncio.create_task(self._load_and_register(version))
            self._loading[key] = task
            task.add_done_callback(lambda done, key=key: self._load_done(key, done))
        return await asyncio.shield(task)

    def _load_done(self, key: tuple[str, str], task: asyncio.Task[LoadedModel]) -> None:
        self._loading.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so a failed load nobody awaits is not logged as lost

    async def _load_and_register(self, version: ModelVersion) -> LoadedModel:
        model = await asyncio.to_thread(self._load, version)
        self._loaded[model.key] = model
        self.known_info[model.key] = model.engine.info
        self._evict(keep=model.key)
        return model

    def _load(self, version: ModelVersion) -> LoadedModel:
        started = time.perf_counter()
        engine = self._make_engine(version)
        if self.warmup:
            size = engine.info.imgsz
            engine.forward(np.zeros((1, 3, size, size), np.float32), 0)
        seconds = time.perf_counter() - started
        log.info(
            "model loaded",
            extra={"model": version.name, "version": version.version, "format": engine.format, "s": seconds},
        )
        if self._on_load:
            self._on_load(version.name, seconds)
        return LoadedModel(version=version, engine=engine, load_seconds=seconds)

    def _make_engine(self, version: ModelVersion) -> Engine:
        source = next(s for s in self.sources if s.kind == version.source)
        want_onnx = self.plan.backend in ("onnxruntime", "openvino")
        order = ["onnx", "pt", "any"] if want_onnx else ["pt", "onnx", "any"]
        fmt = next(f for f in order if f in version.files)
        try:
            path = source.fetch(version, fmt, self.cache_dir)
        except Exception as exc:
            raise ModelLoadError(f"cannot fetch {version.name} version {version.version}: {exc}") from exc
        try:
            if want_onnx and path.suffix != ".onnx":
                path = export_onnx(path, self.cache_dir, self.default_imgsz)
            if path.suffix == ".onnx":
                return self._onnx_engine(path)
            engine = TorchEngine(
                path,
                device=self.plan.device,
                half=self.plan.half,
                replicas=self.plan.workers,
                default_imgsz=self.default_imgsz,
            )
            # Loading through ultralytics can reset torch's thread count; keep the plan's.
            torch.set_num_threads(self.plan.threads_per_worker)
            return engine
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"cannot load {version.name} version {version.version}: {exc}") from exc

    def _onnx_engine(self, path: Path) -> Engine:
        threads, imgsz = self.plan.threads_per_worker, self.default_imgsz
        if self.plan.backend == "openvino":
            return OpenVinoEngine(path, workers=self.plan.workers, threads=threads, default_imgsz=imgsz)
        return OnnxEngine(path, threads=threads, default_imgsz=imgsz)

    def _evict(self, keep: tuple[str, str]) -> None:
        # ``keep`` is the model just loaded for a waiting request: it must survive its own load.
        while len(self._loaded) > self.max_loaded and self._evict_one("lru", keep):
            pass
        if self.plan.device == "cuda" and torch.cuda.is_available():
            budget = torch.cuda.get_device_properties(0).total_memory * self.gpu_memory_fraction
            while torch.cuda.memory_allocated() > budget and self._evict_one("gpu_memory", keep):
                pass

    def _evict_one(self, reason: str, keep: tuple[str, str]) -> bool:
        for key, model in self._loaded.items():
            if model.in_use == 0 and key != keep:
                self.unload(key, reason)
                return True
        return False

    def unload(self, key: tuple[str, str], reason: str) -> bool:
        model = self._loaded.pop(key, None)
        if model is None:
            return False
        model.engine.close()
        log.info("model unloaded", extra={"model": key[0], "version": key[1], "reason": reason})
        if self._on_evict:
            self._on_evict(key[0], reason)
        return True

    def unload_idle(self, idle_timeout_s: float) -> list[tuple[str, str]]:
        now = time.monotonic()
        idle = [
            key
            for key, model in self._loaded.items()
            if model.in_use == 0 and now - model.last_used > idle_timeout_s
        ]
        for key in idle:
            self.unload(key, "idle")
        return idle

    def close(self) -> None:
        for key in list(self._loaded):
            self.unload(key, "shutdown")
