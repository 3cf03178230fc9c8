"""Pure image work: decode with limits, letterbox, map boxes back, draw them."""

from __future__ import annotations

import io
import math
import sys
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

PAD_VALUE = (114, 114, 114)  # the grey ultralytics pads with; the models were trained on it


class ImageError(ValueError):
    """A client-side image problem; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Letterboxed:
    """An image resized and padded for the network, with what is needed to undo it."""

    array: np.ndarray  # float32, CHW, RGB, 0..1
    gain: tuple[float, float]  # (gain_y, gain_x): letterboxed / original
    pad: tuple[int, int]  # (pad_x, pad_y) in letterboxed pixels
    original_shape: tuple[int, int]  # (height, width)

    @property
    def shape(self) -> tuple[int, int]:
        return self.array.shape[1], self.array.shape[2]


def _pil_open(data: bytes) -> Image.Image:
    """PIL's own ``Image.open``, not the one ultralytics patches in on import.

    ultralytics replaces ``PIL.Image.open`` with a wrapper that, for any unidentified file, calls
    ``check_requirements("pi-heif")`` (a pip install when auto-install is on). A server must not
    install packages because a client uploaded garbage, so we call the original it keeps aside.
    """
    patches = sys.modules.get("ultralytics.utils.patches")
    opener = getattr(patches, "_image_open", None) or Image.open
    return opener(io.BytesIO(data))


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode an encoded image to BGR uint8, refusing what is not an image or too large.

    The size is read from the header first, so a 100-megapixel bomb is refused before any pixel is
    decompressed.
    """
    if not data:
        raise ImageError("empty image")
    try:
        with _pil_open(data) as probe:
            width, height = probe.size
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image too large: {exc}", 413) from exc
    except (UnidentifiedImageError, OSError, ValueError, ImportError) as exc:
        raise ImageError("not a decodable image (JPEG, PNG, BMP, WebP, TIFF...)", 415) from exc
    check_pixels(width, height, max_pixels)
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if array is None:
        # Formats OpenCV lacks (GIF) or truncated files it refuses: let PIL have a go.
        try:
            with _pil_open(data) as img:
                rgb = np.asarray(img.convert("RGB"))
        except (OSError, ValueError) as exc:
            raise ImageError(f"corrupt image: {exc}") from exc
        array = np.ascontiguousarray(rgb[..., ::-1])
    return array


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageError("image has no pixels")
    if width * height > max_pixels:
        raise ImageError(f"image has {width}x{height} pixels, more than the limit of {max_pixels}", 413)


def network_shape(image_shape: tuple[int, int], imgsz: int, stride: int, *, rect: bool) -> tuple[int, int]:
    """The input shape (h, w) for one image: a square, or the smallest stride multiple (rect).

    A square lets images of different shapes share a batch; rect is cheaper for one image (a 4:3
    photo costs 640x480 instead of 640x640), which is what ultralytics' own predictor does.
    """
    if not rect:
        return imgsz, imgsz
    height, width = image_shape
    gain = min(imgsz / height, imgsz / width)
    new_h, new_w = max(round(height * gain), 1), max(round(width * gain), 1)
    return imgsz - ((imgsz - new_h) // stride) * stride, imgsz - ((imgsz - new_w) // stride) * stride


def round_imgsz(imgsz: int, stride: int) -> int:
    """Round up to a multiple of the model stride, as ultralytics' check_imgsz does."""
    return max(stride, math.ceil(imgsz / stride) * stride)


def letterbox(image: np.ndarray, shape: tuple[int, int]) -> Letterboxed:
    """Resize keeping the aspect ratio, pad to ``shape``, convert to the network's CHW RGB float."""
    height, width = image.shape[:2]
    gain = min(shape[0] / height, shape[1] / width)
    new_h, new_w = max(round(height * gain), 1), max(round(width * gain), 1)
    if (new_h, new_w) != (height, width):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    pad_h, pad_w = (shape[0] - new_h) / 2, (shape[1] - new_w) / 2
    top, bottom = round(pad_h - 0.1), round(pad_h + 0.1)
    left, right = round(pad_w - 0.1), round(pad_w + 0.1)
    padded = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=PAD_VALUE)
    chw = padded[..., ::-1].transpose(2, 0, 1)
    array = np.ascontiguousarray(chw, dtype=np.float32)
    array *= 1 / 255
    return Letterboxed(
        array=array,
        gain=(new_h / height, new_w / width),
        pad=(left, top),
        original_shape=(height, width),
    )


def boxes_to_original(boxes: np.ndarray, lb: Letterboxed) -> np.ndarray:
    """Map (n, 4) xyxy boxes from letterboxed to original pixels, clipped to the image."""
    out = boxes.astype(np.float64, copy=True)
    out[:, [0, 2]] = (out[:, [0, 2]] - lb.pad[0]) / lb.gain[1]
    out[:, [1, 3]] = (out[:, [1, 3]] - lb.pad[1]) / lb.gain[0]
    height, width = lb.original_shape
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return out


def normalise_boxes(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """xyxy pixels -> xyxy in 0..1 of the image width/height."""
    height, width = shape
    return boxes / np.array([width, height, width, height], dtype=np.float64)


def _colour(class_id: int) -> tuple[int, int, int]:
    # A fixed palette so a class keeps its colour between frames and requests.
    palette = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72)]
    palette += [(23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0)]
    return palette[class_id % len(palette)]


def draw_detections(image: np.ndarray, detections: list[dict]) -> np.ndarray:
    """Draw boxes and labels with OpenCV's built-in Hershey font.

    ultralytics' ``results.plot()`` wants Arial.ttf and downloads it when missing; servers here are
    offline, so we draw ourselves and need no font file.
    """
    canvas = image.copy()
    thickness = max(1, round(sum(canvas.shape[:2]) / 600))
    for det in detections:
        x1, y1, x2, y2 = (round(v) for v in det["box"])
        colour = _colour(det["class_id"])
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
        label = f"{det['class_name']} {det['score']:.2f}"
        scale = thickness / 3
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, thickness - 1))
        top = max(y1 - th - base, 0)
        cv2.rectangle(canvas, (x1, top), (x1 + tw, top + th + base), colour, -1)
        cv2.putText(
            canvas,
            label,
            (x1, top + th),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (255, 255, 255),
            max(1, thickness - 1),
            cv2.LINE_AA,
        )
    return canvas


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()
