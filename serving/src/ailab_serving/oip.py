"""Open Inference Protocol v2 (KServe / Triton) over REST, with Triton's binary tensor extension.

Input: one tensor (any name, ``images`` by convention), either
  * ``BYTES`` of shape ``[N]``: encoded images (binary extension, or base64 strings in JSON), or
  * ``UINT8`` of shape ``[H, W, 3]`` or ``[N, H, W, 3]``: RGB pixels (``"channel_order": "bgr"`` to flip).
Request parameters: ``conf``, ``iou``, ``imgsz``, ``max_det``, ``classes``, and ``timeout`` (microseconds,
as Triton's queue policy): refuse with 429 rather than queue longer than that.
Outputs, padded to the most detections ``K`` in the request:
  ``num_detections`` INT32 [N], ``boxes`` FP32 [N, K, 4] (xyxy pixels), ``scores`` FP32 [N, K],
  ``classes`` INT32 [N, K] (-1 where padded).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from . import __version__
from .detection import ParamError, PredictParams, parse_classes
from .http_common import ApiError, queue_delay_of, require_api_key, state_of
from .inference import ImageResult

HEADER_LENGTH = "inference-header-content-length"

DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(bool),
    "UINT8": np.dtype(np.uint8),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
OUTPUTS = {"num_detections": "INT32", "boxes": "FP32", "scores": "FP32", "classes": "INT32"}

health = APIRouter(tags=["health"])
router = APIRouter(prefix="/v2", tags=["oip-v2"], dependencies=[Depends(require_api_key)])


@dataclass
class DecodedInput:
    images: list[bytes | np.ndarray]
    params: dict[str, Any]
    outputs: list[dict[str, Any]] | None
    binary_output: bool
    request_id: str | None


def deserialize_bytes(buffer: bytes) -> list[bytes]:
    """Triton's BYTES wire format: each element is a little-endian uint32 length then the bytes."""
    items, offset = [], 0
    while offset < len(buffer):
        if offset + 4 > len(buffer):
            raise ApiError(400, "malformed BYTES tensor: truncated length prefix")
        (length,) = struct.unpack_from("<I", buffer, offset)
        offset += 4
        if offset + length > len(buffer):
            raise ApiError(400, "malformed BYTES tensor: element longer than the data")
        items.append(buffer[offset : offset + length])
        offset += length
    return items


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        return [x for item in data for x in _flatten(item)]
    return [data]


def parse_infer_request(body: bytes, header_length: str | None, max_images: int) -> DecodedInput:
    """Parse the JSON header and any binary tensors; pure, so it is unit-tested without a server."""
    if header_length is not None:
        try:
            json_len = int(header_length)
        except ValueError as exc:
            raise ApiError(400, "Inference-Header-Content-Length is not an integer") from exc
        if not 0 < json_len <= len(body):
            raise ApiError(400, "Inference-Header-Content-Length is out of range")
        head, binary = body[:json_len], memoryview(body)[json_len:]
    else:
        head, binary = body, memoryview(b"")
    try:
        request = json.loads(head)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"request is not valid JSON: {exc}") from exc
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise ApiError(400, "request needs an 'inputs' list with one tensor")
    if len(request["inputs"]) != 1:
        raise ApiError(400, "send exactly one input tensor (encoded images or pixels)")
    tensor = request["inputs"][0]
    if not isinstance(tensor, dict):
        raise ApiError(400, "an input must be an object")
    datatype, shape = tensor.get("datatype"), tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ApiError(400, "input 'shape' must be a list of non-negative integers")
    tparams = tensor.get("parameters") or {}
    size = tparams.get("binary_data_size") if isinstance(tparams, dict) else None
    if size is not None:
        if not isinstance(size, int) or size < 0 or size > len(binary):
            raise ApiError(400, "binary_data_size does not match the binary data sent")
        raw: bytes | None = bytes(binary[:size])
    else:
        raw = None
        if "data" not in tensor:
            raise ApiError(400, "input has neither 'data' nor binary data")
    count = int(np.prod(shape)) if shape else 1
    params = request.get("parameters") or {}
    if not isinstance(params, dict):
        raise ApiError(400, "'parameters' must be an object")
    images: list[bytes | np.ndarray]
    if datatype == "BYTES":
        if raw is not None:
            images = list(deserialize_bytes(raw))
        else:
            try:
                images = [base64.b64decode(str(item), validate=True) for item in _flatten(tensor["data"])]
            except (binascii.Error, ValueError) as exc:
                raise ApiError(400, "BYTES data in JSON must be base64-encoded images") from exc
        if len(images) != count:
            raise ApiError(400, f"shape {shape} says {count} elements, got {len(images)}")
    elif datatype == "UINT8":
        if len(shape) not in (3, 4) or shape[-1] != 3:
            raise ApiError(400, "UINT8 input must have shape [H, W, 3] or [N, H, W, 3]")
        if raw is not None:
            if len(raw) != count:
                raise ApiError(400, f"UINT8 tensor of shape {shape} needs {count} bytes, got {len(raw)}")
            pixels = np.frombuffer(raw, np.uint8)
        else:
            try:
                pixels = np.asarray(_flatten(tensor["data"]), dtype=np.int64)
            except (TypeError, ValueError) as exc:
                raise ApiError(400, "UINT8 data must be integers") from exc
            if pixels.size != count or (pixels.size and (pixels.min() < 0 or pixels.max() > 255)):
                raise ApiError(400, f"UINT8 data must be {count} integers in 0..255")
            pixels = pixels.astype(np.uint8)
        pixels = pixels.reshape(shape if len(shape) == 4 else [1, *shape])
        bgr = str(params.get("channel_order", "rgb")).lower() == "bgr"
        images = [np.ascontiguousarray(img if bgr else img[..., ::-1]) for img in pixels]
    else:
        raise ApiError(
            400, f"input datatype {datatype!r} not accepted: use BYTES (encoded) or UINT8 (pixels)"
        )
    if not images:
        raise ApiError(400, "no images in the input")
    if len(images) > max_images:
        raise ApiError(413, f"{len(images)} images in one request; the limit is {max_images}")
    outputs = request.get("outputs")
    if outputs is not None and (
        not isinstance(outputs, list) or not all(isinstance(o, dict) and "name" in o for o in outputs)
    ):
        raise ApiError(400, "'outputs' must be a list of objects with a 'name'")
    for out in outputs or []:
        if out["name"] not in OUTPUTS:
            raise ApiError(400, f"unknown output {out['name']!r}; outputs are {sorted(OUTPUTS)}")
    return DecodedInput(
        images=images,
        params=params,
        outputs=outputs,
        binary_output=bool(params.get("binary_data_output", False)),
        request_id=request.get("id") if isinstance(request.get("id"), str) else None,
    )


def predict_params(raw: dict[str, Any], defaults: PredictParams) -> PredictParams:
    classes = raw.get("classes")
    if isinstance(classes, list):
        classes = [str(c) for c in classes]
    elif classes is not None:
        classes = str(classes)
    try:
        return PredictParams(
            conf=float(raw.get("conf", defaults.conf)),
            iou=float(raw.get("iou", defaults.iou)),
            imgsz=int(raw.get("imgsz", defaults.imgsz)),
            max_det=int(raw.get("max_det", defaults.max_det)),
            classes=parse_classes(classes),
        )
    except ParamError:
        raise
    except (TypeError, ValueError) as exc:
        raise ParamError(f"bad parameter: {exc}") from exc


def output_tensors(results: list[ImageResult]) -> dict[str, np.ndarray]:
    """Pad per-image detections to one [N, K, ...] tensor per output (K = most detections)."""
    n = len(results)
    k = max((len(r.detections) for r in results), default=0)
    boxes = np.zeros((n, k, 4), np.float32)
    scores = np.zeros((n, k), np.float32)
    classes = np.full((n, k), -1, np.int32)
    counts = np.zeros((n,), np.int32)
    for i, result in enumerate(results):
        counts[i] = len(result.detections)
        for j, det in enumerate(result.detections):
            boxes[i, j] = det["box"]
            scores[i, j] = det["score"]
            classes[i, j] = det["class_id"]
    return {"num_detections": counts, "boxes": boxes, "scores": scores, "classes": classes}


def encode_response(
    model: str, version: str, decoded: DecodedInput, tensors: dict[str, np.ndarray]
) -> Response:
    wanted = decoded.outputs or [{"name": name} for name in OUTPUTS]
    header_outputs, blobs = [], []
    for out in wanted:
        name = out["name"]
        array = tensors[name]
        entry: dict[str, Any] = {"name": name, "datatype": OUTPUTS[name], "shape": list(array.shape)}
        binary = (out.get("parameters") or {}).get("binary_data", decoded.binary_output)
        if binary:
            blob = np.ascontiguousarray(array, dtype=DATATYPES[OUTPUTS[name]]).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.reshape(-1).tolist()
        header_outputs.append(entry)
    body: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": header_outputs}
    if decoded.request_id:
        body["id"] = decoded.request_id
    header = json.dumps(body).encode()
    if not blobs:
        return Response(header, media_type="application/json")
    return Response(
        header + b"".join(blobs),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )


# Routes ------------------------------------------------------------------------------------------


@health.get("/v2/health/live", summary="Liveness: the process answers")
async def live() -> dict[str, bool]:
    return {"live": True}


@health.get("/v2/health/ready", summary="Readiness: start-up (and preloads) done")
async def ready(request: Request) -> JSONResponse:
    state = state_of(request)
    body = {"ready": state.ready, "source_errors": state.store.source_errors}
    return JSONResponse(body, status_code=200 if state.ready else 503)


@router.get("", summary="Server metadata")
async def server_metadata() -> dict[str, Any]:
    return {
        "name": "ailab-serving",
        "version": __version__,
        "extensions": ["binary_tensor_data", "model_repository"],
    }


def _model_metadata(name: str, versions: list[str], platform: str) -> dict[str, Any]:
    return {
        "name": name,
        "versions": versions,
        "platform": platform,
        "inputs": [{"name": "images", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "num_detections", "datatype": "INT32", "shape": [-1]},
            {"name": "boxes", "datatype": "FP32", "shape": [-1, -1, 4]},
            {"name": "scores", "datatype": "FP32", "shape": [-1, -1]},
            {"name": "classes", "datatype": "INT32", "shape": [-1, -1]},
        ],
    }


async def _metadata(request: Request, model: str, version: str | None) -> dict[str, Any]:
    store = state_of(request).store
    mv = await store.resolve(model, version)
    entry = (await store.catalog())[mv.name]
    loaded = store.loaded().get((mv.name, mv.version))
    platform = "onnxruntime_onnx" if loaded and loaded.engine.format == "onnx" else "ultralytics_yolo"
    versions = [mv.version] if version else sorted(entry.versions)
    return _model_metadata(mv.name, versions, platform)


@router.get("/models/{model}", summary="Model metadata")
async def model_metadata(request: Request, model: str) -> dict[str, Any]:
    return await _metadata(request, model, None)


@router.get("/models/{model}/versions/{version}", summary="Model version metadata")
async def model_version_metadata(request: Request, model: str, version: str) -> dict[str, Any]:
    return await _metadata(request, model, version)


async def _ready(request: Request, model: str, version: str | None) -> dict[str, Any]:
    # Models load on first use, so "ready" means "can be served": known to the store.
    store = state_of(request).store
    mv = await store.resolve(model, version)
    return {
        "name": mv.name,
        "version": mv.version,
        "ready": True,
        "loaded": (mv.name, mv.version) in store.loaded(),
    }


@router.get("/models/{model}/ready", summary="Model readiness")
async def model_ready(request: Request, model: str) -> dict[str, Any]:
    return await _ready(request, model, None)


@router.get("/models/{model}/versions/{version}/ready", summary="Model version readiness")
async def model_version_ready(request: Request, model: str, version: str) -> dict[str, Any]:
    return await _ready(request, model, version)


def queue_timeout_s(raw: dict[str, Any], default: float | None) -> float | None:
    """The request's ``timeout`` parameter (microseconds, as Triton's) in seconds, else ``default``."""
    if "timeout" not in raw:
        return default
    value = raw["timeout"]
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ApiError(400, "parameter 'timeout' must be a positive number of microseconds")
    return value / 1_000_000


async def _infer(request: Request, model: str, version: str | None) -> Response:
    state = state_of(request)
    settings = state.settings
    # The body is read only once the queue has room (admit refuses first).
    queue_delay = queue_delay_of(request)
    async with state.service.admit(queue_delay):
        body = await request.body()
        decoded = parse_infer_request(
            body, request.headers.get(HEADER_LENGTH), settings.max_images_per_request
        )
        defaults = PredictParams(
            settings.default_conf, settings.default_iou, settings.default_imgsz, settings.default_max_det
        )
        params = predict_params(decoded.params, defaults)
        queue_delay = queue_timeout_s(decoded.params, queue_delay)
        mv = await state.store.resolve(model, version)
        async with state.store.use(mv) as loaded:
            params = params.validate(len(loaded.engine.info.names))
            results = await state.service.predict(
                loaded, decoded.images, params, max_queue_delay_s=queue_delay
            )
    return encode_response(mv.name, mv.version, decoded, output_tensors(results))


INFER_DOC = {
    "requestBody": {
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        }
    }
}


@router.post("/models/{model}/infer", summary="Infer (latest version)", openapi_extra=INFER_DOC)
async def infer(request: Request, model: str) -> Response:
    return await _infer(request, model, None)


@router.post("/models/{model}/versions/{version}/infer", summary="Infer a version", openapi_extra=INFER_DOC)
async def infer_version(request: Request, model: str, version: str) -> Response:
    return await _infer(request, model, version)


# Triton's model repository extension: list, load and unload explicitly.


@router.post("/repository/index", summary="List the model repository")
async def repository_index(request: Request) -> list[dict[str, Any]]:
    store = state_of(request).store
    catalog = await store.catalog(refresh=True)
    loaded = store.loaded()
    return [
        {"name": name, "version": v, "state": "READY" if (name, v) in loaded else "UNAVAILABLE", "reason": ""}
        for name, entry in sorted(catalog.items())
        for v in sorted(entry.versions)
    ]


@router.post("/repository/models/{model}/load", summary="Load a model now")
async def repository_load(request: Request, model: str) -> dict[str, Any]:
    store = state_of(request).store
    mv = await store.resolve(model)
    await store.get(mv)
    return {"name": mv.name, "version": mv.version, "loaded": True}


@router.post("/repository/models/{model}/unload", summary="Unload a model now")
async def repository_unload(request: Request, model: str) -> dict[str, Any]:
    store = state_of(request).store
    mv = await store.resolve(model)
    unloaded = store.unload((mv.name, mv.version), "request")
    return {"name": mv.name, "version": mv.version, "unloaded": unloaded}
