# Copyright: ailab maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Write a planned YOLO dataset to a local folder or an S3 prefix, touching only what changed.

A manifest (``.ailab-export.json``) next to data.yaml records every file the export wrote with its
SHA-256 and, for images, the URI it came from. A re-export with the same annotations then fetches
no image and writes nothing (``changed: false``); files of the previous export that are no longer
planned (a task deleted, an image that moved split) are removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

from ansible_collections.ailab.platform.plugins.module_utils.yolo_dataset import data_yaml_text

MANIFEST = ".ailab-export.json"


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


class LocalStore:
    """Files under one local folder; writes are atomic (temp file + rename)."""

    def __init__(self, root: str):
        self.root = str(Path(root).expanduser().absolute())
        self.location = self.root

    def _path(self, relpath: str) -> Path:
        return Path(self.root, *relpath.split("/"))

    def read(self, relpath: str) -> bytes | None:
        try:
            return self._path(relpath).read_bytes()
        except FileNotFoundError:
            return None

    def has(self, relpath: str, digest: str | None) -> bool:
        """Whether the file is there with this digest (read back: local reads are cheap)."""
        content = self.read(relpath)
        return content is not None and (digest is None or sha256(content) == digest)

    def write(self, relpath: str, content: bytes) -> None:
        path = self._path(relpath)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=str(path.parent), prefix=".tmp-")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
            tmp.chmod(0o644)
            tmp.replace(path)
        except BaseException:
            if tmp.exists():
                tmp.unlink()
            raise

    def delete(self, relpath: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(relpath).unlink()


class S3Store:
    """Objects under one S3 prefix; the manifest is trusted instead of reading every object back."""

    def __init__(self, s3, bucket: str, prefix: str):
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.location = "s3://%s/%s" % (bucket, self.prefix)
        self._manifest_files: dict = {}

    def _key(self, relpath: str) -> str:
        return "%s/%s" % (self.prefix, relpath) if self.prefix else relpath

    def read(self, relpath: str) -> bytes | None:
        return self.s3.get(self.bucket, self._key(relpath))

    def remember(self, manifest_files: dict) -> None:
        self._manifest_files = manifest_files

    def has(self, relpath: str, digest: str | None) -> bool:
        if digest is not None and self._manifest_files.get(relpath) != digest:
            return False
        return self.s3.exists(self.bucket, self._key(relpath))

    def write(self, relpath: str, content: bytes) -> None:
        self.s3.put(self.bucket, self._key(relpath), content)

    def delete(self, relpath: str) -> None:
        self.s3.delete(self.bucket, self._key(relpath))


def read_manifest(store) -> dict:
    raw = store.read(MANIFEST)
    if not raw:
        return {"files": {}, "sources": {}}
    try:
        manifest = json.loads(raw)
    except ValueError:
        return {"files": {}, "sources": {}}
    manifest.setdefault("files", {})
    manifest.setdefault("sources", {})
    return manifest


def write_dataset(
    store, plan: dict, classes: list[str], fetch_image, *, check_mode: bool, yaml_path: str | None
) -> dict:
    """Make the store hold exactly the planned dataset.

    ``fetch_image(item)`` returns an image's bytes; it is only called for images that are missing
    or came from another URI. Returns ``{"changed", "written", "removed", "fetched"}`` with
    dataset-relative paths.
    """
    previous = read_manifest(store)
    if isinstance(store, S3Store):
        store.remember(previous["files"])
    files = {}
    sources = {}
    written = []
    fetched = 0

    for item in plan["items"]:
        image = item["image"]
        known_digest = previous["files"].get(image)
        if previous["sources"].get(image) == item["uri"] and known_digest and store.has(image, known_digest):
            files[image] = known_digest
        else:
            written.append(image)
            if check_mode:
                files[image] = known_digest or ""
            else:
                content = fetch_image(item)
                fetched += 1
                store.write(image, content)
                files[image] = sha256(content)
        sources[image] = item["uri"]

        label_bytes = item["label_text"].encode("utf-8")
        digest = sha256(label_bytes)
        if not store.has(item["label"], digest):
            written.append(item["label"])
            if not check_mode:
                store.write(item["label"], label_bytes)
        files[item["label"]] = digest

    val_dir = "images/val" if plan["counts"]["per_split"]["val"]["images"] else "images/train"
    yaml_bytes = data_yaml_text(classes, path=yaml_path, val_dir=val_dir).encode("utf-8")
    yaml_digest = sha256(yaml_bytes)
    if not store.has("data.yaml", yaml_digest):
        written.append("data.yaml")
        if not check_mode:
            store.write("data.yaml", yaml_bytes)
    files["data.yaml"] = yaml_digest

    removed = sorted(set(previous["files"]) - set(files))
    if not check_mode:
        for relpath in removed:
            store.delete(relpath)

    manifest = {"files": dict(sorted(files.items())), "sources": dict(sorted(sources.items()))}
    manifest_bytes = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode("utf-8")
    changed = bool(written or removed)
    if changed and not check_mode:
        store.write(MANIFEST, manifest_bytes)
    return {"changed": changed, "written": written, "removed": removed, "fetched": fetched}
