"""Typed server settings, read once at start-up from CLI flags and ``AILAB_SERVE_*`` variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Device = Literal["auto", "cpu", "cuda"]
Backend = Literal["auto", "torch", "onnxruntime", "openvino"]

CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Every knob of the server; the README table is generated from these descriptions."""

    model_config = SettingsConfigDict(env_prefix="AILAB_SERVE_", extra="ignore", populate_by_name=True)

    host: str = Field("127.0.0.1", description="Address to bind (use 0.0.0.0 in a container).")
    port: int = Field(8000, ge=1, le=65535, description="TCP port.")
    log_level: str = Field("info", description="Log level: debug, info, warning, error.")
    log_format: Literal["json", "text"] = Field("json", description="Structured JSON logs or plain text.")

    # Model sources.
    model_dir: Path | None = Field(None, description="Local directory of `.pt`/`.onnx` models.")
    s3_endpoint: str | None = Field(None, description="S3 endpoint URL (any S3: MinIO, AWS, moto).")
    s3_bucket: str | None = Field(None, description="S3 bucket holding models (and annotated results).")
    s3_prefix: str = Field("models/", description="Key prefix of the models in the bucket.")
    s3_region: str = Field("us-east-1", description="S3 region.")
    s3_results_prefix: str = Field("predictions/", description="Key prefix for `?return=s3` images.")
    s3_presign_expiry_s: int = Field(3600, ge=1, description="Lifetime of presigned URLs.")
    mlflow_uri: str | None = Field(
        None,
        validation_alias=AliasChoices("AILAB_SERVE_MLFLOW_URI", "MLFLOW_TRACKING_URI", "mlflow_uri"),
        description="MLflow tracking URI for the model registry (falls back to `MLFLOW_TRACKING_URI`).",
    )
    cache_dir: Path = Field(
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ailab-serving",
        description="Where downloaded models and ONNX exports are cached.",
    )
    catalog_ttl_s: float = Field(30.0, ge=0, description="How long the model listing is cached.")
    preload: CommaList = Field(default_factory=list, description="Models to load at start-up (comma list).")

    # Device and runtime.
    device: Device = Field("auto", description="`auto` (CUDA when present), `cpu` or `cuda`.")
    backend: Backend = Field(
        "auto",
        description="`auto` (on CPU OpenVINO when installed, else ONNX Runtime; torch on CUDA), "
        "`openvino`, `onnxruntime` or `torch`; `.pt` models are exported to ONNX once for the first two.",
    )
    half: bool | None = Field(None, description="FP16 inference; default on for CUDA, off on CPU.")
    workers: int | None = Field(
        None, ge=1, description="Inference worker threads; default: one per core on CPU, 1 on CUDA."
    )
    threads_per_worker: int | None = Field(
        None, ge=1, description="Intra-op threads of each worker; default 1 on CPU."
    )
    preprocess_threads: int = Field(2, ge=1, description="Threads that decode and letterbox images.")

    # Cache.
    max_loaded_models: int = Field(3, ge=1, description="LRU bound on loaded models (count).")
    gpu_memory_fraction: float = Field(
        0.8, gt=0, le=1, description="LRU bound on CUDA memory held by models (fraction of the device)."
    )
    idle_timeout_s: float = Field(900.0, ge=0, description="Unload a model unused for this long (0 = never).")
    warmup: bool = Field(True, description="Run one dummy inference when a model loads.")

    # Batching and backpressure.
    max_batch_size: int | None = Field(
        None, ge=1, description="Dynamic batching bound; default 1 on CPU (batching does not pay), 8 on CUDA."
    )
    max_batch_wait_ms: float = Field(
        2.0, ge=0, description="How long a batch waits for more requests once the first is queued."
    )
    queue_size: int = Field(64, ge=1, description="Images waiting for inference; beyond it answers 429.")
    max_inflight_requests: int = Field(
        128, ge=1, description="Requests being decoded or waiting; beyond it answers 503."
    )
    request_timeout_s: float = Field(30.0, gt=0, description="Per-request inference deadline (504 after).")
    max_queue_delay_ms: float | None = Field(
        None,
        gt=0,
        description="Queue deadline: a request whose estimated wait is longer gets 429 at once, an image "
        "still queued after it is dropped before inference (429). Unset = no bound but the queue size. "
        "Per request: OIP parameter `timeout` (microseconds), `/v1` `max_queue_delay_ms` or header "
        "`X-Max-Queue-Delay-Ms`.",
    )

    # Request limits.
    max_request_bytes: int = Field(25 * 2**20, ge=1, description="Largest image request body.")
    max_video_bytes: int = Field(200 * 2**20, ge=1, description="Largest video upload or download.")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Largest decoded image (width x height).")
    max_images_per_request: int = Field(16, ge=1, description="Images in one request.")
    max_video_frames: int = Field(10_000, ge=1, description="Frames analysed per video at most.")
    video_url_allowlist: CommaList = Field(
        default_factory=list,
        description="Hosts (comma list) the video endpoint may download from; empty = URLs refused.",
    )

    # Defaults of the prediction parameters.
    default_conf: float = Field(0.25, ge=0, le=1, description="Default confidence threshold.")
    default_iou: float = Field(0.7, ge=0, le=1, description="Default NMS IoU threshold.")
    default_imgsz: int = Field(640, ge=32, le=4096, description="Default inference size.")
    default_max_det: int = Field(300, ge=1, le=10_000, description="Default detections per image.")

    # Security.
    api_key: str | None = Field(None, description="If set, required as `X-API-Key` or `Bearer` token.")
    cors_origins: CommaList = Field(
        default_factory=list, description="Allowed CORS origins (comma list); empty = CORS off."
    )

    @field_validator("preload", "video_url_allowlist", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("api_key", "s3_endpoint", "s3_bucket", "mlflow_uri", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        # Helm and Ansible render unset values as empty strings.
        return None if value == "" else value

    @model_validator(mode="after")
    def _check_device(self) -> Settings:
        if self.device == "cuda" and self.backend in ("onnxruntime", "openvino"):
            raise ValueError(f"backend={self.backend} serves on CPU only; use backend=torch with device=cuda")
        return self
