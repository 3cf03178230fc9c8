# Copyright: ailab maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Import images as Label Studio tasks, with optional boxes, without importing anything twice.

A task is known by its image: an S3 object or URL by the URI in its data (which is also what a
source storage sync creates), an uploaded local file by the SHA-256 of its content, kept in the
task data as ``ailab_sha256`` (an upload gets a new random name every time, so the name cannot
tell).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ansible_collections.ailab.platform.plugins.module_utils.label_studio import LabelStudioError
from ansible_collections.ailab.platform.plugins.module_utils.yolo_dataset import (
    DatasetError,
    parse_yolo_label_text,
    yolo_to_region,
)

SHA_KEY = "ailab_sha256"


def normalise_box(box, classes: list[str]) -> tuple[str, float, float, float, float, float | None]:
    """A box given as ``{class, x_center, y_center, width, height[, score]}`` or
    ``[class, x_center, y_center, width, height]`` -> ``(class_name, xc, yc, w, h, score)``.

    ``class`` is an index into ``classes`` (the YOLO class space) or a class name.
    """
    if isinstance(box, (list, tuple)):
        if len(box) != 5:
            raise DatasetError("a box list needs [class, x_center, y_center, width, height], got %r" % (box,))
        cls, xc, yc, w, h = box
        score = None
    elif isinstance(box, dict):
        missing = [k for k in ("class", "x_center", "y_center", "width", "height") if k not in box]
        if missing:
            raise DatasetError("box %r lacks %s" % (box, ", ".join(missing)))
        cls, xc, yc, w, h = (box[k] for k in ("class", "x_center", "y_center", "width", "height"))
        score = box.get("score")
    else:
        raise DatasetError("a box must be a dict or a list, got %r" % (box,))
    if isinstance(cls, bool):
        raise DatasetError("box class must be an index or a name, got %r" % (cls,))
    if isinstance(cls, int) or (isinstance(cls, str) and cls.isdigit()):
        index = int(cls)
        if not 0 <= index < len(classes):
            raise DatasetError("box class %d is outside the %d classes %s" % (index, len(classes), classes))
        name = classes[index]
    elif cls in classes:
        name = cls
    else:
        raise DatasetError("box class %r is not one of the classes %s" % (cls, classes))
    try:
        numbers = tuple(float(v) for v in (xc, yc, w, h))
    except (TypeError, ValueError):
        raise DatasetError("box %r has non-numeric coordinates" % (box,)) from None
    return (name, *numbers, None if score is None else float(score))


def boxes_to_result(
    boxes: list, classes: list[str], from_name: str, to_name: str
) -> tuple[list, float | None]:
    """Label Studio result regions for YOLO boxes, and the mean score of those that have one."""
    result = []
    scores = []
    for box in boxes:
        name, xc, yc, w, h, score = normalise_box(box, classes)
        value = yolo_to_region(xc, yc, w, h)
        value["rectanglelabels"] = [name]
        region = {"from_name": from_name, "to_name": to_name, "type": "rectanglelabels", "value": value}
        if score is not None:
            region["score"] = score
            scores.append(score)
        result.append(region)
    return result, (sum(scores) / len(scores) if scores else None)


def describe_image(spec: dict, default_bucket: str | None) -> dict:
    """Normalise one requested image to ``{"kind", "uri"|"path", "name"}``."""
    given = [k for k in ("path", "s3_key", "url") if spec.get(k)]
    if len(given) != 1:
        raise DatasetError("each image needs exactly one of path, s3_key, url; got %r" % (spec,))
    if spec.get("path"):
        path = Path(spec["path"]).expanduser().absolute()
        return {"kind": "upload", "path": str(path), "name": path.name}
    if spec.get("s3_key"):
        bucket = spec.get("bucket") or default_bucket
        if not bucket:
            raise DatasetError(
                "image s3_key %r has no bucket: give bucket (per image or s3_bucket) or attach an S3 "
                "source storage to the project" % spec["s3_key"]
            )
        uri = "s3://%s/%s" % (bucket, spec["s3_key"].lstrip("/"))
        return {"kind": "uri", "uri": uri, "name": spec["s3_key"]}
    return {"kind": "uri", "uri": spec["url"], "name": spec["url"]}


def read_boxes(spec: dict) -> list | None:
    """The boxes given for an image: inline ``boxes`` or a YOLO ``label_file``; None when neither."""
    if spec.get("boxes") is not None and spec.get("label_file"):
        raise DatasetError("give boxes or label_file for an image, not both: %r" % (spec,))
    if spec.get("label_file"):
        try:
            text = Path(spec["label_file"]).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise DatasetError("cannot read label_file %s: %s" % (spec["label_file"], exc.strerror)) from None
        try:
            return [list(box) for box in parse_yolo_label_text(text)]
        except DatasetError as exc:
            raise DatasetError("%s: %s" % (spec["label_file"], exc)) from None
    return spec.get("boxes")


def index_existing(tasks: list, image_key: str) -> dict:
    """Map every identity of the existing tasks (image URI, content hash) to its task."""
    index = {}
    for task in tasks:
        data = task.get("data") or {}
        if data.get(SHA_KEY):
            index.setdefault("sha256:" + data[SHA_KEY], task)
        if isinstance(data.get(image_key), str):
            index.setdefault(data[image_key], task)
    return index


def import_tasks(
    client, project: dict, interface: dict, images: list, options: dict, *, check_mode: bool
) -> dict:
    """Ensure one task per image, and boxes on it when given.

    ``interface`` is ``label_config.parse_box_config`` of the project; ``options`` holds
    ``classes`` (override of the class order for numeric classes), ``boxes_as``
    (``predictions``/``annotations``), ``model_version``, ``default_bucket``.
    Returns counts and the ids of the tasks for the requested images (None in check mode for
    tasks that would be created).
    """
    classes = options.get("classes") or interface["classes"]
    unknown = [c for c in classes if c not in interface["classes"]]
    if unknown:
        raise DatasetError(
            "classes %s are not labels of the project's label config %s" % (unknown, interface["classes"])
        )
    image_key = interface["image_key"]
    existing = index_existing(client.export_tasks(project["id"]), image_key)

    new_tasks = []
    new_sources = []
    planned = []
    seen = set()
    for spec in images:
        image = describe_image(spec, options.get("default_bucket"))
        boxes = read_boxes(spec)
        result = score = None
        if boxes is not None:
            result, score = boxes_to_result(boxes, classes, interface["labels_name"], interface["image_name"])
        if image["kind"] == "upload":
            try:
                content = Path(image["path"]).read_bytes()
            except OSError as exc:
                raise DatasetError("cannot read image %s: %s" % (image["path"], exc.strerror)) from None
            digest = hashlib.sha256(content).hexdigest()
            identity = "sha256:" + digest
        else:
            content = digest = None
            identity = image["uri"]
        if identity in seen:
            continue  # the same image twice in the list: one task
        seen.add(identity)
        planned.append((identity, image, content, digest, result, score))

    predictions_added = 0
    annotations_added = 0
    task_ids = []
    already_there = 0
    for identity, image, content, digest, result, score in planned:
        task = existing.get(identity)
        if task is None:
            new_sources.append(image.get("path") or image.get("uri"))
            new_tasks.append((image, content, digest, result, score))
            continue
        already_there += 1
        task_ids.append(task["id"])
        if result is None:
            continue
        # An existing task gets the boxes only when it has none of that kind yet: never twice.
        if (
            options["boxes_as"] == "predictions"
            and not task.get("total_predictions")
            and not task.get("predictions")
        ):
            predictions_added += 1
            if not check_mode:
                body = {"task": task["id"], "result": result, "model_version": options["model_version"]}
                if score is not None:
                    body["score"] = score
                client.request(
                    "POST", "/api/predictions/", body, what="the prediction for task %d" % task["id"]
                )
        elif options["boxes_as"] == "annotations" and not [
            a for a in task.get("annotations") or [] if not a.get("was_cancelled")
        ]:
            annotations_added += 1
            if not check_mode:
                client.request(
                    "POST",
                    "/api/tasks/%d/annotations/" % task["id"],
                    {"result": result},
                    what="the annotation for task %d" % task["id"],
                )

    payload = []
    for image, content, digest, result, score in new_tasks:
        if check_mode:
            url = image.get("uri")
        elif image["kind"] == "upload":
            url = client.upload_file(project["id"], image["name"], content)
        else:
            url = image["uri"]
        data = {image_key: url}
        if digest:
            data[SHA_KEY] = digest
        task = {"data": data}
        if result is not None:
            if options["boxes_as"] == "predictions":
                prediction = {"result": result, "model_version": options["model_version"]}
                if score is not None:
                    prediction["score"] = score
                task["predictions"] = [prediction]
                predictions_added += 1
            else:
                task["annotations"] = [{"result": result}]
                annotations_added += 1
        payload.append(task)

    if payload and not check_mode:
        answer = client.request(
            "POST",
            "/api/projects/%d/import?return_task_ids=true" % project["id"],
            payload,
            what="the task import into project %d" % project["id"],
        )
        created = (answer or {}).get("task_ids") or []
        if len(created) != len(payload):
            raise LabelStudioError(
                "Label Studio created %d of %d tasks: %r" % (len(created), len(payload), answer)
            )
        task_ids.extend(created)
    elif payload:
        task_ids.extend([None] * len(payload))

    changed = bool(payload or predictions_added or annotations_added)
    return {
        "changed": changed,
        "imported": len(payload),
        "existing": already_there,
        "predictions_added": predictions_added,
        "annotations_added": annotations_added,
        "task_ids": task_ids,
        "imported_sources": new_sources,
    }
