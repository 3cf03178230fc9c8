"""The naive baseline: the FastAPI app most people write first around ultralytics.

One model object, ``model(img)`` per request inside the async handler (so requests are served one at a
time on the event loop), ultralytics' default threading. A request for another model reloads it.
Run: ``BENCH_MODEL_DIR=... uvicorn baseline_app:app``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
from fastapi import FastAPI, File, UploadFile
from ultralytics import YOLO

MODEL_DIR = Path(os.environ["BENCH_MODEL_DIR"])
app = FastAPI()
current: dict[str, YOLO] = {}


@app.post("/predict/{name}")
async def predict(name: str, file: Annotated[UploadFile, File()]) -> dict:
    if name not in current:
        current.clear()
        current[name] = YOLO(str(MODEL_DIR / f"{name}.pt"))
    model = current[name]
    img = cv2.imdecode(np.frombuffer(await file.read(), np.uint8), cv2.IMREAD_COLOR)
    result = model(img, verbose=False)[0]
    return {
        "boxes": result.boxes.xyxy.tolist(),
        "scores": result.boxes.conf.tolist(),
        "classes": result.boxes.cls.tolist(),
    }


@app.get("/health")
async def health() -> dict:
    return {"ok": True}
