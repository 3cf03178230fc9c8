"""Inference engines: a YOLO network behind one ``forward(batch) -> raw predictions`` call.

Three kinds: torch (``.pt``, CPU or CUDA, FP16 on CUDA), ONNX Runtime and OpenVINO (``.onnx``, CPU).
All return the raw head output ``(N, 4 + classes [+ extra], anchors)``; NMS and box mapping are
shared, so they give the same detections within float tolerance.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import logging
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

log = logging.getLogger(__name__)

# Tasks whose head starts with 4 box + N class channels; segment/pose are served as boxes only.
BOX_TASKS = {"detect", "segment", "pose"}


class UnsupportedModelError(ValueError):
    """The file is a model we cannot serve (classification, OBB, not YOLO)."""


@dataclass
class ModelInfo:
    task: str
    names: dict[int, str]
    stride: int
    imgsz: int
    dynamic: bool  # accepts any input shape and batch size
    end2end: bool  # head already does NMS (YOLOv10/YOLO26 style)
    extra: dict[str, str] = field(default_factory=dict)


class Engine(Protocol):
    info: ModelInfo
    format: str

    def forward(self, batch: np.ndarray, replica: int) -> torch.Tensor: ...

    def memory_bytes(self) -> int: ...

    def close(self) -> None: ...


def _check_task(task: str, path: Path) -> None:
    if task not in BOX_TASKS:
        raise UnsupportedModelError(f"{path.name}: task {task!r} is not served (detect, segment, pose are)")


def _imgsz(value: object, default: int) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, list | tuple) and value:
        return int(max(value))
    return default


class TorchEngine:
    """An ultralytics ``.pt`` network, one deep copy per worker thread.

    The Detect head caches anchors for the last input shape in the module itself, so two threads
    sharing one module race; a small YOLO is a few MB, so each worker gets its own replica.
    """

    format = "pt"

    def __init__(self, path: Path, *, device: str, half: bool, replicas: int, default_imgsz: int) -> None:
        from ultralytics import YOLO  # noqa: PLC0415  (heavy import, done when a model loads)

        yolo = YOLO(str(path), task=None)
        _check_task(yolo.task, path)
        net = yolo.model
        if not isinstance(net, torch.nn.Module):
            raise UnsupportedModelError(f"{path.name}: not a PyTorch YOLO model")
        net = net.fuse() if hasattr(net, "fuse") else net
        net = net.to(device).eval()
        if half:
            net = net.half()
        for param in net.parameters():
            param.requires_grad_(False)
        head = net.model[-1] if hasattr(net, "model") else None
        self.info = ModelInfo(
            task=yolo.task,
            names={int(k): str(v) for k, v in dict(net.names).items()},
            stride=int(max(int(net.stride.max()), 32)),
            imgsz=_imgsz(yolo.overrides.get("imgsz") or getattr(net, "args", {}).get("imgsz"), default_imgsz),
            dynamic=True,
            end2end=bool(getattr(head, "end2end", False)),
        )
        self._device = torch.device(device)
        self._half = half
        self._replicas = [net] + [copy.deepcopy(net) for _ in range(replicas - 1)]

    def forward(self, batch: np.ndarray, replica: int) -> torch.Tensor:
        tensor = torch.from_numpy(batch).to(self._device, non_blocking=True)
        if self._half:
            tensor = tensor.half()
        with torch.inference_mode():
            out = self._replicas[replica % len(self._replicas)](tensor)
        out = out[0] if isinstance(out, list | tuple) else out
        return out.float()

    def memory_bytes(self) -> int:
        net = self._replicas[0]
        return sum(p.numel() * p.element_size() for p in net.parameters()) * len(self._replicas)

    def close(self) -> None:
        self._replicas.clear()
        if self._device.type == "cuda":
            torch.cuda.empty_cache()


class OnnxEngine:
    """An ONNX export run by ONNX Runtime on CPU; one session serves all workers concurrently.

    ``InferenceSession.run`` is documented thread-safe, so workers share it; each run uses
    ``threads`` intra-op threads (1 per worker by default, so N workers fill N cores).
    """

    format = "onnx"

    def __init__(self, path: Path, *, threads: int, default_imgsz: int) -> None:
        import onnxruntime as ort  # noqa: PLC0415  (optional dependency, only needed with this engine)

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own untyped errors for bad files
            raise UnsupportedModelError(f"{path.name}: ONNX Runtime cannot load it: {exc}") from exc
        model_input = self._session.get_inputs()[0]
        self._input_name = model_input.name
        self.info = _onnx_info(
            self._session.get_modelmeta().custom_metadata_map,
            model_input.shape,
            self._session.get_outputs()[0].shape[1],
            default_imgsz,
            path,
        )
        self._path = path

    def forward(self, batch: np.ndarray, replica: int) -> torch.Tensor:
        (out, *_rest) = self._session.run(None, {self._input_name: batch})
        return torch.from_numpy(out)

    def memory_bytes(self) -> int:
        return self._path.stat().st_size

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]


class OpenVinoEngine:
    """An ONNX export compiled by OpenVINO for the CPU: one stream and one infer request per worker.

    Each stream runs ``threads`` threads, so N single-threaded workers fill N cores as with ONNX
    Runtime. FP32 precision is forced: on CPUs with bf16 units OpenVINO would otherwise lower the
    precision by itself and the detections would drift from the other engines'.
    """

    format = "openvino"

    def __init__(self, path: Path, *, workers: int, threads: int, default_imgsz: int) -> None:
        import onnx  # noqa: PLC0415  (only needed with this engine)
        import openvino as ov  # noqa: PLC0415

        try:
            proto = onnx.load(str(path), load_external_data=False)
            core = ov.Core()
            compiled = core.compile_model(
                core.read_model(str(path)),
                "CPU",
                {
                    "NUM_STREAMS": str(workers),
                    "INFERENCE_NUM_THREADS": str(workers * threads),
                    "INFERENCE_PRECISION_HINT": "f32",
                },
            )
        except Exception as exc:  # onnx and OpenVINO raise their own untyped errors for bad files
            raise UnsupportedModelError(f"{path.name}: OpenVINO cannot load it: {exc}") from exc
        dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
        channels = proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value
        meta = {prop.key: prop.value for prop in proto.metadata_props}
        self.info = _onnx_info(meta, dims, channels, default_imgsz, path)
        self._requests = [compiled.create_infer_request() for _ in range(workers)]
        self._path = path

    def forward(self, batch: np.ndarray, replica: int) -> torch.Tensor:
        request = self._requests[replica % len(self._requests)]
        out = request.infer({0: batch}, share_inputs=True)
        return torch.from_numpy(out[0])

    def memory_bytes(self) -> int:
        return self._path.stat().st_size

    def close(self) -> None:
        self._requests.clear()


def _onnx_info(
    meta: dict[str, str], dims: list[int | str], channels: object, default_imgsz: int, path: Path
) -> ModelInfo:
    """What an ultralytics ONNX export says of itself (task, names, stride, size) in its metadata."""
    task = meta.get("task", "detect")
    _check_task(task, path)
    names_raw = meta.get("names")
    names = ast.literal_eval(names_raw) if names_raw else {}
    dynamic = not all(isinstance(d, int) for d in dims)
    imgsz = _imgsz(ast.literal_eval(meta["imgsz"]) if "imgsz" in meta else None, default_imgsz)
    if not names:
        names = {i: str(i) for i in range(int(channels) - 4)}
    return ModelInfo(
        task=task,
        names={int(k): str(v) for k, v in names.items()},
        stride=int(meta.get("stride", 32)),
        imgsz=imgsz if dynamic else int(dims[2]),
        dynamic=dynamic,
        end2end=meta.get("end2end", "False") == "True",
    )


_export_lock = threading.Lock()


def export_onnx(pt_path: Path, cache_dir: Path, imgsz: int) -> Path:
    """Export a ``.pt`` to a dynamic-shape ONNX file once, cached by the file's content.

    The key is a hash of the bytes, not name/size/mtime: two versions saved in the same second with
    the same size (``animals/1/model.pt``, ``animals/2/model.pt``) must not share an export. The
    export is done on a copy in the cache, never next to the source (a read-only volume in a pod).
    """
    with pt_path.open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()[:24]
    key = f"{pt_path.stem}-{digest}-{imgsz}"
    target_dir = cache_dir / "onnx" / key
    target = target_dir / f"{pt_path.stem}.onnx"
    if target.exists():
        return target
    with _export_lock:
        if target.exists():
            return target
        from ultralytics import YOLO  # noqa: PLC0415  (heavy import, done when a model loads)

        target_dir.mkdir(parents=True, exist_ok=True)
        work = target_dir / f"{pt_path.stem}.pt"
        shutil.copyfile(pt_path, work)
        threads = torch.get_num_threads()
        try:
            exported = YOLO(str(work)).export(
                format="onnx", dynamic=True, simplify=False, imgsz=imgsz, device="cpu", verbose=False
            )
        finally:
            # ultralytics' select_device resets torch's thread count; put ours back.
            torch.set_num_threads(threads)
            work.unlink(missing_ok=True)
        log.info("exported ONNX", extra={"source": str(pt_path), "onnx": exported})
        return Path(exported)
