"""The friendly REST API: ``GET /v1/models`` and ``POST /v1/predict/{model}`` (multipart images)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import Response

from .detection import PredictParams, parse_classes
from .http_common import (
    QUEUE_DELAY_QUERY,
    AdmittedRoute,
    ApiError,
    AppState,
    queue_delay_of,
    require_api_key,
    state_of,
)
from .images import draw_detections, encode_jpeg
from .inference import ImageResult

router = APIRouter(
    prefix="/v1", tags=["v1"], dependencies=[Depends(require_api_key)], route_class=AdmittedRoute
)

ReturnKind = Literal["json", "image", "s3"]


def build_params(
    state: AppState,
    *,
    conf: float | None,
    iou: float | None,
    imgsz: int | None,
    max_det: int | None,
    classes: str | None,
) -> PredictParams:
    s = state.settings
    return PredictParams(
        conf=s.default_conf if conf is None else conf,
        iou=s.default_iou if iou is None else iou,
        imgsz=s.default_imgsz if imgsz is None else imgsz,
        max_det=s.default_max_det if max_det is None else max_det,
        classes=parse_classes(classes),
    )


# Form fields shared by the image and the video endpoints (bounds here give 422 before any work).
Conf = Annotated[float | None, Form(ge=0, le=1, description="Confidence threshold")]
Iou = Annotated[float | None, Form(ge=0, le=1, description="NMS IoU threshold")]
Imgsz = Annotated[int | None, Form(ge=32, le=4096, description="Inference size (rounded up to the stride)")]
MaxDet = Annotated[int | None, Form(ge=1, le=10000, description="Detections per image at most")]
Classes = Annotated[str | None, Form(description="Class ids to keep, e.g. 0,2", max_length=2000)]
Version = Annotated[
    str | None, Query(description="Version number or alias (default: latest)", max_length=200)
]


def image_json(result: ImageResult, index: int) -> dict[str, Any]:
    return {
        "index": index,
        "width": result.width,
        "height": result.height,
        "detections": result.detections,
        "timings_ms": result.timings_ms,
    }


@router.get("/models", summary="What the model store holds")
async def list_models(request: Request) -> dict[str, Any]:
    state = state_of(request)
    store = state.store
    catalog = await store.catalog()
    loaded = store.loaded()
    models = []
    for name, entry in sorted(catalog.items()):
        versions = []
        for version in sorted(entry.versions):
            mv = entry.versions[version]
            info = store.known_info.get((name, version))
            model = loaded.get((name, version))
            versions.append(
                {
                    "version": version,
                    "aliases": sorted(a for a, v in entry.aliases.items() if v == version),
                    "formats": sorted(mv.files),
                    "loaded": model is not None,
                    "engine": model.engine.format if model else None,
                    "task": info.task if info else None,
                    "classes": info.names if info else None,
                    "imgsz": info.imgsz if info else None,
                }
            )
        models.append(
            {
                "name": name,
                "source": entry.source,
                "latest": entry.latest,
                "aliases": entry.aliases,
                "versions": versions,
                "loaded": any(v["loaded"] for v in versions),
            }
        )
    return {
        "models": models,
        "source_errors": store.source_errors,
        "cache": {"loaded": len(loaded), "max_loaded": store.max_loaded},
        "runtime": {
            "device": state.plan.device,
            "backend": state.plan.backend,
            "workers": state.plan.workers,
            "max_batch_size": state.plan.max_batch_size,
        },
    }


@router.post(
    "/predict/{model}",
    summary="Detect objects in one or more images",
    responses={200: {"content": {"application/json": {}, "image/jpeg": {}}}},
)
async def predict(
    request: Request,
    model: str,
    *,
    file: Annotated[list[UploadFile], File(description="One or more images (repeat the field)")],
    conf: Conf = None,
    iou: Iou = None,
    imgsz: Imgsz = None,
    max_det: MaxDet = None,
    classes: Classes = None,
    version: Version = None,
    return_: Annotated[ReturnKind, Query(alias="return", description="json, image (JPEG) or s3")] = "json",
    max_queue_delay_ms: Annotated[
        float | None,
        Query(
            alias=QUEUE_DELAY_QUERY,
            gt=0,
            description="Answer 429 now rather than queue longer than this (also X-Max-Queue-Delay-Ms)",
        ),
    ] = None,
) -> Response:
    state = state_of(request)
    started = time.perf_counter()
    if len(file) > state.settings.max_images_per_request:
        raise ApiError(413, f"{len(file)} images; the limit is {state.settings.max_images_per_request}")
    if return_ == "image" and len(file) != 1:
        raise ApiError(422, "return=image takes exactly one image; use return=s3 or json for several")
    if return_ == "s3" and (state.s3_client is None or not state.settings.s3_bucket):
        raise ApiError(422, "return=s3 needs AILAB_SERVE_S3_BUCKET (and endpoint) configured on the server")
    params = build_params(state, conf=conf, iou=iou, imgsz=imgsz, max_det=max_det, classes=classes)
    queue_delay = queue_delay_of(request)
    async with state.service.admit(queue_delay):
        images = [await upload.read() for upload in file]
        mv = await state.store.resolve(model, version)
        hit = (mv.name, mv.version) in state.store.loaded()
        (state.metrics.cache_hits if hit else state.metrics.cache_misses).inc()
        async with state.store.use(mv) as loaded:
            params = params.validate(len(loaded.engine.info.names))
            results = await state.service.predict(
                loaded, list(images), params, keep_images=return_ != "json", max_queue_delay_s=queue_delay
            )
    if return_ == "image":
        result = results[0]
        assert result.image is not None
        jpeg = await asyncio.to_thread(lambda: encode_jpeg(draw_detections(result.image, result.detections)))
        return Response(
            jpeg,
            media_type="image/jpeg",
            headers={"X-Detections": str(len(result.detections)), "X-Model-Version": mv.version},
        )
    body: dict[str, Any] = {
        "model": mv.name,
        "version": mv.version,
        "task": loaded.engine.info.task,
        "engine": loaded.engine.format,
        "params": {
            "conf": params.conf,
            "iou": params.iou,
            "imgsz": params.imgsz,
            "max_det": params.max_det,
            "classes": list(params.classes) if params.classes else None,
        },
        "images": [image_json(r, i) for i, r in enumerate(results)],
    }
    if return_ == "s3":
        stored = await asyncio.gather(
            *(asyncio.to_thread(_store_annotated, state, mv.name, r) for r in results)
        )
        for entry, location in zip(body["images"], stored, strict=True):
            entry["annotated"] = location
    body["timings_ms"] = {"total": round((time.perf_counter() - started) * 1000, 2)}
    return Response(_json(body), media_type="application/json")


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _store_annotated(state: AppState, model: str, result: ImageResult) -> dict[str, str]:
    assert result.image is not None
    jpeg = encode_jpeg(draw_detections(result.image, result.detections))
    day = dt.datetime.now(dt.UTC).strftime("%Y/%m/%d")
    key = f"{state.settings.s3_results_prefix}{model}/{day}/{uuid.uuid4().hex}.jpg"
    bucket = state.settings.s3_bucket
    state.s3_client.put_object(Bucket=bucket, Key=key, Body=jpeg, ContentType="image/jpeg")
    url = state.s3_client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=state.settings.s3_presign_expiry_s
    )
    return {"bucket": bucket, "key": key, "url": url}
