"""Where models come from: a local directory, an S3 prefix, the MLflow registry.

Each source lists ``ModelVersion`` records (cheap: names and keys only) and fetches one version to a
local file on demand. Local and S3 share one layout:

    <root>/<name>.pt | <name>.onnx              -> model <name>, version "1"
    <root>/<name>/<version>/<any>.pt | .onnx    -> model <name>, version <version> (Triton-like)
    <root>/<name>/<any>.pt | .onnx              -> model <name>, version "1"

A ``.pt`` and an ``.onnx`` of the same version are two formats of one model: the engine picks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

log = logging.getLogger(__name__)

MODEL_SUFFIXES = {".pt": "pt", ".onnx": "onnx"}


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    source: str  # "local" | "s3" | "mlflow"
    files: dict[str, str]  # format -> location understood by the source (path, key, URI)
    aliases: tuple[str, ...] = ()


@dataclass
class CatalogEntry:
    name: str
    source: str
    versions: dict[str, ModelVersion] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> version

    @property
    def latest(self) -> str:
        return max(self.versions, key=version_sort_key)


def version_sort_key(version: str) -> tuple[int, int | str]:
    # Numeric versions order numerically and above names ("10" > "9" > "beta").
    return (1, int(version)) if version.isdigit() else (0, version)


def parse_layout(relative_paths: list[str]) -> dict[tuple[str, str], dict[str, str]]:
    """Map relative paths (POSIX) to {(name, version): {format: path}} following the layout above."""
    found: dict[tuple[str, str], dict[str, str]] = {}
    for rel in sorted(relative_paths):
        path = PurePosixPath(rel)
        fmt = MODEL_SUFFIXES.get(path.suffix.lower())
        if fmt is None or any(part.startswith(".") for part in path.parts):
            continue
        parts = path.parts
        if len(parts) == 1:
            name, version = path.stem, "1"
        elif len(parts) == 2:
            name, version = parts[0], "1"
        elif len(parts) == 3:
            name, version = parts[0], parts[1]
        else:
            continue
        # First file of a format wins (sorted order), so a stray second .pt does not flip versions.
        found.setdefault((name, version), {}).setdefault(fmt, rel)
    return found


class Source(Protocol):
    kind: str

    def list(self) -> list[ModelVersion]: ...

    def fetch(self, version: ModelVersion, fmt: str, cache_dir: Path) -> Path: ...


class LocalSource:
    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def list(self) -> list[ModelVersion]:
        if not self.root.is_dir():
            log.warning("model directory missing", extra={"model_dir": str(self.root)})
            return []
        rel = [p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()]
        return [
            ModelVersion(name, version, self.kind, {fmt: str(self.root / r) for fmt, r in files.items()})
            for (name, version), files in parse_layout(rel).items()
        ]

    def fetch(self, version: ModelVersion, fmt: str, cache_dir: Path) -> Path:
        return Path(version.files[fmt])


class S3Source:
    kind = "s3"

    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"

    def list(self) -> list[ModelVersion]:
        keys: list[str] = []
        etags: dict[str, str] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(self.prefix) :]
                keys.append(rel)
                etags[rel] = obj.get("ETag", "").strip('"')
        return [
            ModelVersion(
                name,
                version,
                self.kind,
                {fmt: f"{self.prefix}{r}#{etags.get(r, '')}" for fmt, r in files.items()},
            )
            for (name, version), files in parse_layout(keys).items()
        ]

    def fetch(self, version: ModelVersion, fmt: str, cache_dir: Path) -> Path:
        key, _, etag = version.files[fmt].partition("#")
        # The ETag in the cache path means a re-uploaded object is fetched again, an unchanged one never.
        target = cache_dir / "s3" / self.bucket / (etag or "noetag") / key
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(target.suffix + ".part")
            self.client.download_file(self.bucket, key, str(partial))
            partial.rename(target)
        return target


class MlflowSource:
    """Registered models of an MLflow registry; a version's artifacts must hold a .pt or .onnx."""

    kind = "mlflow"

    def __init__(self, tracking_uri: str) -> None:
        from mlflow import MlflowClient  # noqa: PLC0415  (mlflow is optional and slow to import)

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def list(self) -> list[ModelVersion]:
        versions: list[ModelVersion] = []
        for model in self.client.search_registered_models(max_results=1000):
            aliases_by_version: dict[str, list[str]] = {}
            for alias, ver in (getattr(model, "aliases", None) or {}).items():
                aliases_by_version.setdefault(str(ver), []).append(alias)
            for mv in self.client.search_model_versions(f"name='{model.name}'", max_results=1000):
                uri = f"models:/{model.name}/{mv.version}"
                versions.append(
                    ModelVersion(
                        model.name,
                        str(mv.version),
                        self.kind,
                        {"any": uri},
                        tuple(sorted(aliases_by_version.get(str(mv.version), []))),
                    )
                )
        return versions

    def fetch(self, version: ModelVersion, fmt: str, cache_dir: Path) -> Path:
        from mlflow.artifacts import download_artifacts  # noqa: PLC0415

        target = cache_dir / "mlflow" / version.name / version.version
        marker = target / ".complete"
        if not marker.exists():
            target.mkdir(parents=True, exist_ok=True)
            download_artifacts(
                artifact_uri=version.files["any"], dst_path=str(target), tracking_uri=self.tracking_uri
            )
            marker.touch()
        return find_model_file(target, version)


def find_model_file(root: Path, version: ModelVersion) -> Path:
    """The model file inside downloaded artifacts: prefer best.pt, then any .pt, then .onnx."""
    candidates = sorted(p for p in root.rglob("*") if p.suffix in MODEL_SUFFIXES and p.is_file())
    if not candidates:
        raise FileNotFoundError(f"{version.name} version {version.version}: no .pt or .onnx in its artifacts")
    candidates.sort(key=lambda p: (p.name != "best.pt", p.suffix != ".pt", str(p)))
    return candidates[0]


def make_s3_client(endpoint: str | None, region: str) -> Any:
    import boto3  # noqa: PLC0415  (only when S3 is configured)
    from botocore.config import Config  # noqa: PLC0415

    # Path-style addressing works with MinIO and moto as well as AWS.
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )
