"""Letterbox, box mapping and decoding limits (pure functions)."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from ailab_serving.images import (
    ImageError,
    boxes_to_original,
    decode_image,
    draw_detections,
    encode_jpeg,
    letterbox,
    network_shape,
    normalise_boxes,
    round_imgsz,
)
from PIL import Image
from serving_testlib import jpeg, shapes_image
from ultralytics.data.augment import LetterBox


@pytest.mark.parametrize(("height", "width"), [(1080, 810), (480, 640), (640, 640), (100, 3000), (37, 53)])
@pytest.mark.parametrize("imgsz", [320, 640])
def test_rect_shape_and_pixels_match_ultralytics(height: int, width: int, imgsz: int) -> None:
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    theirs = LetterBox((imgsz, imgsz), auto=True, stride=32)(image=image)
    shape = network_shape((height, width), imgsz, 32, rect=True)
    assert shape == theirs.shape[:2]
    ours = letterbox(image, shape)
    # Same geometry and the same pixels (ours is RGB CHW float in 0..1).
    expected = theirs[..., ::-1].transpose(2, 0, 1).astype(np.float32) / 255
    np.testing.assert_allclose(ours.array, expected, atol=1e-6)


def test_square_shape_for_batching() -> None:
    assert network_shape((1080, 810), 640, 32, rect=False) == (640, 640)


def test_round_imgsz_to_stride() -> None:
    assert round_imgsz(300, 32) == 320
    assert round_imgsz(320, 32) == 320
    assert round_imgsz(1, 32) == 32


def test_boxes_round_trip_to_original_pixels() -> None:
    image = np.zeros((1080, 810, 3), np.uint8)
    lb = letterbox(image, network_shape(image.shape[:2], 640, 32, rect=True))
    # A box covering the whole letterboxed content maps to the whole image.
    x0, y0 = lb.pad
    x1, y1 = x0 + 810 * lb.gain[1], y0 + 1080 * lb.gain[0]
    boxes = boxes_to_original(np.array([[x0, y0, x1, y1], [-50, -50, 9999, 9999]]), lb)
    np.testing.assert_allclose(boxes[0], [0, 0, 810, 1080], atol=0.5)
    np.testing.assert_allclose(boxes[1], [0, 0, 810, 1080])  # clipped
    np.testing.assert_allclose(normalise_boxes(boxes[:1], (1080, 810)), [[0, 0, 1, 1]], atol=1e-3)


def test_decode_jpeg_png_and_gif() -> None:
    img = shapes_image(64, 48)
    assert decode_image(jpeg(img), 10_000).shape == (48, 64, 3)
    for fmt in ("PNG", "GIF", "BMP", "WEBP"):
        buf = io.BytesIO()
        Image.fromarray(img[..., ::-1]).save(buf, fmt)
        assert decode_image(buf.getvalue(), 10_000).shape == (48, 64, 3), fmt


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"", 400),
        (b"not an image at all", 415),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, 415),
        (jpeg(shapes_image(64, 48))[:200], 415),  # truncated inside the JPEG header
    ],
    ids=["empty", "text", "broken-png", "truncated-jpeg"],
)
def test_decode_refuses_bad_data(data: bytes, status: int) -> None:
    with pytest.raises(ImageError) as err:
        decode_image(data, 10_000)
    assert err.value.status == status


def test_decode_refuses_too_many_pixels_before_decoding() -> None:
    with pytest.raises(ImageError) as err:
        decode_image(jpeg(shapes_image(200, 100)), 19_999)
    assert err.value.status == 413


def test_draw_needs_no_font_file() -> None:
    img = shapes_image(320, 240)
    det = {"class_id": 1, "class_name": "square", "score": 0.9, "box": [10, 10, 100, 80]}
    out = draw_detections(img, [det])
    assert out.shape == img.shape and not np.array_equal(out, img)
    assert cv2.imdecode(np.frombuffer(encode_jpeg(out), np.uint8), cv2.IMREAD_COLOR).shape == img.shape
