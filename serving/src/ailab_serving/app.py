"""The FastAPI application: lifespan (all state), middleware, routers, metrics and the web page."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from importlib import resources

import torch
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import __version__, oip, predict_api, video
from .http_common import AccessLogMiddleware, AppState, BodyLimitMiddleware, install_error_handlers, state_of
from .inference import InferenceService
from .metrics import Metrics
from .model_sources import LocalSource, MlflowSource, S3Source, Source, make_s3_client
from .model_store import ModelStore
from .runtime import plan_runtime
from .settings import Settings

log = logging.getLogger(__name__)

STATIC = resources.files("ailab_serving") / "static"


def build_sources(settings: Settings, s3_client: object | None) -> list[Source]:
    sources: list[Source] = []
    if settings.model_dir is not None:
        sources.append(LocalSource(settings.model_dir))
    if settings.s3_bucket and s3_client is not None:
        sources.append(S3Source(s3_client, settings.s3_bucket, settings.s3_prefix))
    if settings.mlflow_uri:
        sources.append(MlflowSource(settings.mlflow_uri))
    return sources


def _set_threads(intra: int) -> None:
    torch.set_num_threads(intra)
    # Inter-op parallelism only adds contention for YOLO's sequential graph; it can be set only once.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


async def _unload_idle(state: AppState) -> None:
    timeout = state.settings.idle_timeout_s
    period = min(max(timeout / 4, 0.2), 30.0)
    while True:
        await asyncio.sleep(period)
        state.store.unload_idle(timeout)
        state.metrics.loaded_models.set(len(state.store.loaded()))


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        plan = plan_runtime(settings, cuda_available=torch.cuda.is_available(), cpu_count=os.cpu_count() or 1)
        _set_threads(plan.threads_per_worker)
        s3_client = make_s3_client(settings.s3_endpoint, settings.s3_region) if settings.s3_bucket else None
        settings.cache_dir.mkdir(parents=True, exist_ok=True)
        store = ModelStore(
            build_sources(settings, s3_client),
            plan,
            cache_dir=settings.cache_dir,
            catalog_ttl_s=settings.catalog_ttl_s,
            max_loaded=settings.max_loaded_models,
            gpu_memory_fraction=settings.gpu_memory_fraction,
            default_imgsz=settings.default_imgsz,
            warmup=settings.warmup,
            on_load=metrics.on_load,
            on_evict=metrics.on_evict,
        )
        service = InferenceService(settings, plan, metrics)
        state = AppState(
            settings=settings, plan=plan, metrics=metrics, store=store, service=service, s3_client=s3_client
        )
        app.state.ailab = state
        service.start()
        log.info("starting", extra={"version": __version__, "plan": plan.__dict__})
        await store.catalog()
        for name in settings.preload:
            await store.get(await store.resolve(name))
        metrics.loaded_models.set(len(store.loaded()))
        idle = asyncio.create_task(_unload_idle(state)) if settings.idle_timeout_s > 0 else None
        state.ready = True
        try:
            yield
        finally:
            state.ready = False
            if idle:
                idle.cancel()
            await asyncio.to_thread(service.stop)
            store.close()

    app = FastAPI(
        title="ailab YOLO server",
        version=__version__,
        description="YOLO inference: Open Inference Protocol v2 and a friendly REST API. AGPL-3.0-only.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(oip.health)
    app.include_router(oip.router)
    app.include_router(predict_api.router)
    app.include_router(video.router)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus(request: Request) -> Response:
        registry = state_of(request).metrics.registry
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    # Order: the outermost middleware is added last. CORS only when origins are configured.
    app.add_middleware(
        BodyLimitMiddleware, default_limit=settings.max_request_bytes, video_limit=settings.max_video_bytes
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=["X-Detections", "X-Request-Id"],
        )
    app.add_middleware(AccessLogMiddleware, metrics=metrics)
    return app
