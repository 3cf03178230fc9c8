"""Video: per-frame detections streamed as NDJSON, with bounded memory.

The upload (or a download from an allow-listed host) goes to a temporary file; OpenCV reads one
frame at a time; at most ``workers + 1`` frames are in flight, so memory does not grow with the video.
Lines: one ``meta``, one ``frame`` per analysed frame, then ``summary`` (or ``error`` if it stops).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import cv2
import httpx
import numpy as np
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import StreamingResponse

from .detection import PredictParams
from .http_common import AdmittedRoute, ApiError, AppState, require_api_key, state_of
from .images import ImageError
from .inference import ImageResult, InferenceTimeoutError, OverloadedError
from .model_store import LoadedModel
from .predict_api import Classes, Conf, Imgsz, Iou, MaxDet, Version, build_params

router = APIRouter(
    prefix="/v1", tags=["v1"], dependencies=[Depends(require_api_key)], route_class=AdmittedRoute
)


def host_allowed(url: str, allowlist: list[str]) -> bool:
    """Exact host match, or a ``.example.org`` entry for its subdomains; only http(s)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    host = parts.hostname.lower()
    for entry in (e.lower() for e in allowlist):
        if host == entry or (entry.startswith(".") and host.endswith(entry)):
            return True
    return False


async def _download(url: str, target: Path, limit: int) -> None:
    # No redirects: a redirect could lead outside the allow-list.
    async with (
        httpx.AsyncClient(follow_redirects=False, timeout=30) as client,
        client.stream("GET", url) as response,
    ):
        if response.status_code != 200:
            raise ApiError(422, f"video URL answered {response.status_code}")
        size = 0
        with target.open("wb") as out:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"video larger than {limit} bytes")
                out.write(chunk)


async def _save_upload(upload: UploadFile, target: Path, limit: int) -> None:
    size = 0
    with target.open("wb") as out:
        while chunk := await upload.read(1 << 20):
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"video larger than {limit} bytes")
            out.write(chunk)


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


@router.post(
    "/predict/{model}/video",
    summary="Detect objects in a video; per-frame results as NDJSON",
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
async def predict_video(
    request: Request,
    model: str,
    *,
    file: Annotated[UploadFile | None, File(description="The video file")] = None,
    url: Annotated[
        str | None, Form(description="Or a video URL on an allow-listed host", max_length=2000)
    ] = None,
    frame_stride: Annotated[int, Form(ge=1, le=10000, description="Analyse every n-th frame")] = 1,
    max_frames: Annotated[int | None, Form(ge=1, description="Stop after this many analysed frames")] = None,
    conf: Conf = None,
    iou: Iou = None,
    imgsz: Imgsz = None,
    max_det: MaxDet = None,
    classes: Classes = None,
    version: Version = None,
) -> StreamingResponse:
    state = state_of(request)
    settings = state.settings
    if (file is None) == (url is None or url == ""):
        raise ApiError(422, "send either a video file (field 'file') or a 'url', not both")
    params = build_params(state, conf=conf, iou=iou, imgsz=imgsz, max_det=max_det, classes=classes)
    limit_frames = min(max_frames or settings.max_video_frames, settings.max_video_frames)
    # Resources held for the whole stream are released by the stream itself (see _stream).
    stack = contextlib.AsyncExitStack()
    try:
        await stack.enter_async_context(state.service.admit())
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ailab-video-")))
        path = workdir / "video"
        if file is not None:
            await _save_upload(file, path, settings.max_video_bytes)
        else:
            assert url is not None
            if not host_allowed(url, settings.video_url_allowlist):
                raise ApiError(403, "video URL host is not in AILAB_SERVE_VIDEO_URL_ALLOWLIST")
            try:
                await _download(url, path, settings.max_video_bytes)
            except httpx.HTTPError as exc:
                raise ApiError(422, f"cannot download the video: {exc}") from exc
        capture = await asyncio.to_thread(cv2.VideoCapture, str(path))
        stack.callback(capture.release)
        ok, first = await asyncio.to_thread(capture.read)
        if not capture.isOpened() or not ok or first is None:
            raise ApiError(415, "not a decodable video (MP4, AVI, MKV, WebM...)")
        height, width = first.shape[:2]
        if width * height > settings.max_image_pixels:
            raise ImageError(f"video frames of {width}x{height} are over the pixel limit", 413)
        mv = await state.store.resolve(model, version)
        loaded = await stack.enter_async_context(state.store.use(mv))
        params = params.validate(len(loaded.engine.info.names))
        meta = {
            "type": "meta",
            "model": mv.name,
            "version": mv.version,
            "width": width,
            "height": height,
            "fps": capture.get(cv2.CAP_PROP_FPS) or None,
            "frame_count": int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None,
            "frame_stride": frame_stride,
        }
    except BaseException:
        await stack.aclose()
        raise
    stream = _stream(
        state,
        stack,
        model=loaded,
        capture=capture,
        first=first,
        meta=meta,
        params=params,
        stride=frame_stride,
        limit_frames=limit_frames,
    )
    return StreamingResponse(stream, media_type="application/x-ndjson")


async def _stream(
    state: AppState,
    stack: contextlib.AsyncExitStack,
    *,
    model: LoadedModel,
    capture: cv2.VideoCapture,
    first: np.ndarray,
    meta: dict[str, Any],
    params: PredictParams,
    stride: int,
    limit_frames: int,
) -> AsyncIterator[bytes]:
    started = time.perf_counter()
    fps = meta["fps"] or 0.0
    # Enough frames in flight to keep every worker busy, and no more: memory stays flat.
    depth = state.plan.workers * state.plan.max_batch_size + 1
    pending: collections.deque[tuple[int, asyncio.Task[list[ImageResult]]]] = collections.deque()
    analysed = index = 0
    try:
        yield _line(meta)
        frame: np.ndarray | None = first
        while frame is not None and analysed < limit_frames:
            if index % stride == 0:
                pending.append((index, asyncio.create_task(state.service.predict(model, [frame], params))))
                analysed += 1
            while len(pending) >= depth or (pending and pending[0][1].done()):
                done_index, task = pending.popleft()
                yield _frame_line(done_index, (await task)[0], fps)
            index += 1
            ok, next_frame = await asyncio.to_thread(capture.read)
            frame = next_frame if ok else None
        while pending:
            done_index, task = pending.popleft()
            yield _frame_line(done_index, (await task)[0], fps)
        summary = {
            "type": "summary",
            "frames_read": index,
            "frames_analysed": analysed,
            "seconds": round(time.perf_counter() - started, 3),
        }
        yield _line(summary)
    except (OverloadedError, InferenceTimeoutError, ImageError) as exc:
        # The status line is gone already; say what stopped the stream in the stream itself.
        yield _line({"type": "error", "error": str(exc)})
    finally:
        for _index, task in pending:
            task.cancel()
        await stack.aclose()


def _frame_line(index: int, result: ImageResult, fps: float) -> bytes:
    return _line(
        {
            "type": "frame",
            "frame": index,
            "time_s": round(index / fps, 3) if fps else None,
            "detections": result.detections,
            "timings_ms": result.timings_ms,
        }
    )
