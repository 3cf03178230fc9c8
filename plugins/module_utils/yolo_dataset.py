# Copyright: ailab maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Label Studio tasks <-> ultralytics YOLO datasets, as pure functions.

Label Studio stores a box as top-left ``x``/``y`` and ``width``/``height`` in percent of the
image (``original_width``/``original_height``), plus ``rotation`` in degrees clockwise about the
top-left corner. YOLO wants ``class x_center y_center width height`` normalised to 0..1, axis
aligned. Label Studio's own YOLO export numbers classes alphabetically and ignores rotation, so
the export is computed here from the JSON export instead.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import posixpath
import re
from urllib.parse import parse_qs, unquote, urlsplit

IMAGE_SUFFIXES = (".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm", ".heic")
BOX_RESULT_TYPES = ("rectanglelabels",)
SPLITS = ("train", "val")
UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")


class DatasetError(ValueError):
    """Annotations that cannot be turned into a YOLO dataset."""


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))


def region_to_yolo(value: dict, original_width: float | None = None, original_height: float | None = None):
    """Convert one Label Studio box ``value`` to ``(x_center, y_center, width, height)`` in 0..1.

    A rotated box becomes the axis-aligned box that encloses it, clipped to the image. Rotation
    must be computed in pixels (a square in percent is not a square on a wide image), so it needs
    the original size; an unrotated box does not.
    Returns None for a box with no area after clipping.
    """
    try:
        x = float(value["x"]) / 100.0
        y = float(value["y"]) / 100.0
        w = float(value["width"]) / 100.0
        h = float(value["height"]) / 100.0
    except (KeyError, TypeError, ValueError):
        raise DatasetError("box has no numeric x, y, width, height: %r" % (value,)) from None
    rotation = float(value.get("rotation") or 0.0) % 360.0
    if rotation:
        if not original_width or not original_height:
            raise DatasetError("a rotated box needs original_width and original_height to be converted")
        W = float(original_width)
        H = float(original_height)
        theta = math.radians(rotation)
        cos_t = math.cos(theta)
        sin_t = math.sin(theta)
        # Image coordinates have y pointing down, so this standard rotation turns clockwise on screen.
        xs = []
        ys = []
        for cx, cy in ((0.0, 0.0), (w * W, 0.0), (w * W, h * H), (0.0, h * H)):
            xs.append(x * W + cx * cos_t - cy * sin_t)
            ys.append(y * H + cx * sin_t + cy * cos_t)
        left, right = _clip(min(xs) / W), _clip(max(xs) / W)
        top, bottom = _clip(min(ys) / H), _clip(max(ys) / H)
    else:
        left, right = _clip(x), _clip(x + w)
        top, bottom = _clip(y), _clip(y + h)
    if right - left <= 0.0 or bottom - top <= 0.0:
        return None
    return ((left + right) / 2.0, (top + bottom) / 2.0, right - left, bottom - top)


def yolo_to_region(x_center: float, y_center: float, width: float, height: float) -> dict:
    """Convert a normalised YOLO box to Label Studio's percent ``x``/``y``/``width``/``height``."""
    for name, number in (
        ("x_center", x_center),
        ("y_center", y_center),
        ("width", width),
        ("height", height),
    ):
        if not 0.0 <= float(number) <= 1.0:
            raise DatasetError("YOLO box %s=%r is outside 0..1 (boxes are normalised)" % (name, number))
    return {
        "x": round((float(x_center) - float(width) / 2.0) * 100.0, 6),
        "y": round((float(y_center) - float(height) / 2.0) * 100.0, 6),
        "width": round(float(width) * 100.0, 6),
        "height": round(float(height) * 100.0, 6),
        "rotation": 0,
    }


def parse_yolo_label_text(text: str) -> list[tuple[int, float, float, float, float]]:
    """Parse a YOLO label file (``class xc yc w h`` per line) into tuples."""
    boxes = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise DatasetError(
                "line %d: expected 'class x_center y_center width height', got %r" % (number, line)
            )
        try:
            boxes.append((int(fields[0]), *(float(f) for f in fields[1:])))
        except ValueError:
            raise DatasetError("line %d: not numbers: %r" % (number, line)) from None
    return boxes


def pick_annotation(task: dict) -> dict | None:
    """The annotation that counts for a task: the latest one that was not cancelled (skipped)."""
    annotations = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not annotations:
        return None
    return max(annotations, key=lambda a: (a.get("updated_at") or "", a.get("id") or 0))


def task_boxes(task: dict, class_index: dict, from_name: str | None = None) -> list | None:
    """YOLO boxes ``(class_id, xc, yc, w, h)`` of a task's chosen annotation, or None if unlabelled.

    Classes are mapped by name through ``class_index`` (name -> id), never by Label Studio's order.
    An annotation with no boxes is a labelled background image and gives ``[]``.
    """
    annotation = pick_annotation(task)
    if annotation is None:
        return None
    boxes = []
    for region in annotation.get("result") or []:
        if region.get("type") not in BOX_RESULT_TYPES:
            continue
        if from_name and region.get("from_name") != from_name:
            continue
        value = region.get("value") or {}
        box = region_to_yolo(value, region.get("original_width"), region.get("original_height"))
        if box is None:
            continue
        for label in value.get("rectanglelabels") or []:
            if label not in class_index:
                raise DatasetError(
                    "task %s has a box labelled %r, which is not one of the classes %s"
                    % (task.get("id"), label, list(class_index))
                )
            boxes.append((class_index[label], *box))
    return boxes


def label_file_text(boxes: list) -> str:
    """Render YOLO boxes as a label file; fixed precision keeps re-exports byte-identical."""
    return "".join("%d %.6f %.6f %.6f %.6f\n" % tuple(box) for box in boxes)


def _safe_stem(stem: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")
    return stem or "image"


def _decode_file_uri(encoded: str) -> str | None:
    """The storage URI inside Label Studio's ``fileuri`` parameter (URL-safe or plain base64)."""
    padded = encoded + "=" * (-len(encoded) % 4)
    for decode in (base64.urlsafe_b64decode, base64.b64decode):
        try:
            return decode(padded.encode("ascii")).decode("utf-8")
        except (ValueError, UnicodeError):
            continue
    return None


def _image_path(uri: str) -> str:
    """The path that carries an image's own name, for every URL form Label Studio gives a task.

    ``/data/local-files/?d=dir/a.jpg`` (local files storage) keeps it in ``d``;
    ``/tasks/<id>/presign/?fileuri=<base64>`` (cloud storage proxied by Label Studio) in the base64
    of ``s3://``, ``gs://`` or ``azure-blob://bucket/key``; uploads, storage URIs and plain URLs in
    their (percent-encoded) path.
    """
    parts = urlsplit(uri)
    query = parse_qs(parts.query)
    if "d" in query and "local-files" in parts.path:
        return query["d"][0]
    if "fileuri" in query and "presign" in parts.path:
        decoded = _decode_file_uri(query["fileuri"][0])
        if decoded and decoded != uri:
            return _image_path(decoded)
    return unquote(parts.path)


def source_basename(uri: str) -> str:
    """The file name of an image URI (any form :func:`_image_path` reads)."""
    path = _image_path(uri)
    name = posixpath.basename(path.rstrip("/")) or "image"
    if "/data/upload/" in path or path.startswith("upload/"):
        # Label Studio prefixes uploads with 8 random hex digits: keep the user's own name.
        name = UPLOAD_PREFIX.sub("", name) or name
    return name


def unique_file_stems(uris: list[str]) -> list[str]:
    """Give every image a file stem that is unique in the dataset and stable across exports.

    Images keep their own name; when two sources share a stem (``a/img.jpg`` and ``b/img.jpg``,
    or ``img.png`` and ``img.jpg``, which would share ``img.txt``), each of them gets a short hash
    of its full URI appended. Comparison ignores case, for case-insensitive file systems.
    """
    stems = [_safe_stem(posixpath.splitext(source_basename(uri))[0]) for uri in uris]
    counts: dict = {}
    for stem in stems:
        counts[stem.lower()] = counts.get(stem.lower(), 0) + 1
    result = []
    taken: set = set()
    for index, uri in enumerate(uris):
        base = stems[index]
        if counts[base.lower()] > 1:
            base = "%s_%s" % (base, hashlib.sha1(uri.encode("utf-8")).hexdigest()[:8])
        candidate = base
        number = 1
        # The same URI in two tasks: keep both, numbered.
        while candidate.lower() in taken:
            number += 1
            candidate = "%s_%d" % (base, number)
        taken.add(candidate.lower())
        result.append(candidate)
    return result


def image_suffix(uri: str) -> str:
    suffix = posixpath.splitext(source_basename(uri))[1].lower()
    return suffix if suffix in IMAGE_SUFFIXES else ".jpg"


def assign_splits(stems: list[str], val_fraction: float, seed: int) -> dict:
    """Assign each stem to ``train`` or ``val``, deterministically for a seed.

    Items are ranked by a seeded hash of their name and the first ``round(n * val_fraction)``
    (at least one when there are two or more items and a fraction above 0) go to val. Ranking by
    hash rather than shuffling keeps the split stable when images are added: an existing image
    changes split only at the boundary.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DatasetError("val_fraction must be in [0, 1), got %r" % (val_fraction,))
    ranked = sorted(stems, key=lambda s: hashlib.sha256(("%d:%s" % (seed, s)).encode("utf-8")).hexdigest())
    n_val = round(len(ranked) * val_fraction)
    if val_fraction > 0 and len(ranked) >= 2:
        n_val = min(max(n_val, 1), len(ranked) - 1)
    val = set(ranked[:n_val])
    return {stem: ("val" if stem in val else "train") for stem in stems}


def _yaml_str(value: str) -> str:
    # JSON strings are valid YAML double-quoted scalars; this avoids needing PyYAML on the target.
    return json.dumps(value, ensure_ascii=False)


def data_yaml_text(classes: list[str], path: str | None = None, val_dir: str = "images/val") -> str:
    """The dataset's data.yaml. ``path`` is absolute or left out: ultralytics resolves a relative
    ``path`` against the working directory, and a missing one against the yaml file's folder."""
    lines = ["# Written by ailab.platform.label_studio_export"]
    if path:
        lines.append("path: %s" % _yaml_str(path))
    lines.append("train: images/train")
    lines.append("val: %s" % val_dir)
    lines.append("nc: %d" % len(classes))
    lines.append("names:")
    lines.extend("  %d: %s" % (index, _yaml_str(name)) for index, name in enumerate(classes))
    return "\n".join(lines) + "\n"


def build_export_plan(
    tasks: list,
    classes: list[str],
    image_key: str,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    from_name: str | None = None,
) -> dict:
    """Plan a YOLO dataset from Label Studio's JSON export (a list of tasks).

    Returns ``{"items": [...], "skipped_unlabelled": int, "counts": {...}}`` where each item is
    ``{"task_id", "uri", "stem", "split", "image", "label", "label_text"}`` with dataset-relative
    paths. Unlabelled tasks (no annotation, or only skipped ones) are left out and counted.
    """
    class_index = {name: index for index, name in enumerate(classes)}
    labelled = []
    skipped = 0
    for task in sorted(tasks, key=lambda t: t.get("id") or 0):
        boxes = task_boxes(task, class_index, from_name)
        if boxes is None:
            skipped += 1
            continue
        uri = (task.get("data") or {}).get(image_key)
        if not isinstance(uri, str) or not uri:
            raise DatasetError("task %s has no image URL under data.%s" % (task.get("id"), image_key))
        labelled.append((task, uri, boxes))
    stems = unique_file_stems([entry[1] for entry in labelled])
    splits = assign_splits(stems, val_fraction, seed)
    items = []
    per_class = {name: 0 for name in classes}
    per_split = {split: {"images": 0, "boxes": 0} for split in SPLITS}
    for index, (task, uri, boxes) in enumerate(labelled):
        stem = stems[index]
        split = splits[stem]
        items.append(
            {
                "task_id": task.get("id"),
                "uri": uri,
                "stem": stem,
                "split": split,
                "image": "images/%s/%s%s" % (split, stem, image_suffix(uri)),
                "label": "labels/%s/%s.txt" % (split, stem),
                "label_text": label_file_text(boxes),
            }
        )
        per_split[split]["images"] += 1
        per_split[split]["boxes"] += len(boxes)
        for box in boxes:
            per_class[classes[box[0]]] += 1
    return {
        "items": items,
        "skipped_unlabelled": skipped,
        "counts": {"per_class": per_class, "per_split": per_split, "images": len(items)},
    }
