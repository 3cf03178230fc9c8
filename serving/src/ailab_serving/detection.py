"""Prediction parameters, NMS on raw head output and the detection records we return."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from ultralytics.utils.nms import non_max_suppression

from .images import Letterboxed, boxes_to_original, normalise_boxes


class ParamError(ValueError):
    """A bad prediction parameter (answered with 422)."""


@dataclass(frozen=True)
class PredictParams:
    conf: float
    iou: float
    imgsz: int
    max_det: int
    classes: tuple[int, ...] | None = None

    def validate(self, num_classes: int | None = None) -> PredictParams:
        if not 0.0 <= self.conf <= 1.0:
            raise ParamError("conf must be between 0 and 1")
        if not 0.0 <= self.iou <= 1.0:
            raise ParamError("iou must be between 0 and 1")
        if not 32 <= self.imgsz <= 4096:
            raise ParamError("imgsz must be between 32 and 4096")
        if not 1 <= self.max_det <= 10_000:
            raise ParamError("max_det must be between 1 and 10000")
        if self.classes is not None:
            bad = [c for c in self.classes if c < 0 or (num_classes is not None and c >= num_classes)]
            if bad:
                raise ParamError(f"unknown class ids {bad}; the model has {num_classes} classes")
        return self


def parse_classes(value: str | list[str] | None) -> tuple[int, ...] | None:
    """Accept ``classes=0,2`` or repeated ``classes=0&classes=2``."""
    if not value:
        return None
    items = value if isinstance(value, list) else [value]
    try:
        return tuple(int(part) for item in items for part in str(item).split(",") if part.strip())
    except ValueError as exc:
        raise ParamError("classes must be integers, e.g. classes=0,2") from exc


def run_nms(raw: torch.Tensor, params: PredictParams, num_classes: int, *, end2end: bool) -> list[np.ndarray]:
    """NMS per image of a batch; rows are ``x1 y1 x2 y2 score class`` in letterboxed pixels."""
    out = non_max_suppression(
        raw,
        conf_thres=params.conf,
        iou_thres=params.iou,
        classes=list(params.classes) if params.classes else None,
        max_det=params.max_det,
        nc=num_classes,
        end2end=end2end,
    )
    return [rows[:, :6].cpu().numpy() for rows in out]


def to_detections(rows: np.ndarray, lb: Letterboxed, names: dict[int, str]) -> list[dict]:
    """Rows from ``run_nms`` -> JSON records in original pixels and normalised coordinates."""
    if rows.size == 0:
        return []
    boxes = boxes_to_original(rows[:, :4], lb)
    norm = normalise_boxes(boxes, lb.original_shape)
    records = []
    for box, nbox, score, cls in zip(boxes, norm, rows[:, 4], rows[:, 5], strict=True):
        class_id = int(cls)
        records.append(
            {
                "class_id": class_id,
                "class_name": names.get(class_id, str(class_id)),
                "score": round(float(score), 5),
                "box": [round(float(v), 2) for v in box],
                "box_normalized": [round(float(v), 5) for v in nbox],
            }
        )
    return records
