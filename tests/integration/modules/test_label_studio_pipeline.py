"""Label Studio modules against a real Label Studio, moto S3 and ultralytics.

The tests run in file order and build on each other, as the lab's pipeline does: project with S3
storages -> tasks with annotations -> YOLO dataset -> ultralytics reads it.
"""

from __future__ import annotations

import io
import random

import pytest
import yaml

CLASSES = ["square", "circle", "triangle"]
TITLE = "Shapes integration"
BUCKET = "lab"
LOCAL_NAMES = ["cam1/frame0.png", "cam1/frame1.png", "cam2/frame0.png", "cam2/frame1.png", "cam2/frame2.png"]
S3_KEYS = ["raw/img5.png", "raw/img6.png", "raw/img7.png", "raw/img8.png", "raw/img9.png"]
UNLABELLED_KEY = "raw/extra/unlabelled.png"


def draw_shapes(seed: int) -> tuple[bytes, list[list]]:
    """A PNG with 1-3 coloured shapes on a plain background, and their YOLO boxes."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    width, height = 160, 120
    image = Image.new("RGB", (width, height), tuple(rng.randint(200, 255) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    boxes = []
    for _ in range(rng.randint(1, 3)):
        cls = rng.randrange(len(CLASSES))
        w, h = rng.randint(20, 50), rng.randint(20, 50)
        x0, y0 = rng.randint(0, width - w), rng.randint(0, height - h)
        colour = tuple(rng.randint(0, 150) for _ in range(3))
        if CLASSES[cls] == "square":
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=colour)
        elif CLASSES[cls] == "circle":
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=colour)
        else:
            draw.polygon(((x0, y0 + h), (x0 + w, y0 + h), (x0 + w / 2, y0)), fill=colour)
        boxes.append([cls, (x0 + w / 2) / width, (y0 + h / 2) / height, w / width, h / height])
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue(), boxes


@pytest.fixture(scope="module")
def data(workdir, s3_server):
    """10 labelled images (5 local in two folders sharing basenames, 5 in S3) and 1 unlabelled in S3."""
    s3 = s3_server["client"]
    s3.create_bucket(Bucket=BUCKET)
    local, remote = [], []
    for index, name in enumerate(LOCAL_NAMES):
        content, boxes = draw_shapes(index)
        path = workdir / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        local.append({"path": str(path), "boxes": boxes})
    for index, key in enumerate(S3_KEYS, start=len(LOCAL_NAMES)):
        content, boxes = draw_shapes(index)
        s3.put_object(Bucket=BUCKET, Key=key, Body=content)
        remote.append({"s3_key": key, "boxes": boxes})
    s3.put_object(Bucket=BUCKET, Key=UNLABELLED_KEY, Body=draw_shapes(99)[0])
    per_class = {name: 0 for name in CLASSES}
    for item in local + remote:
        for box in item["boxes"]:
            per_class[CLASSES[box[0]]] += 1
    return {"local": local, "remote": remote, "per_class": per_class}


def connection(label_studio):
    return {"url": label_studio["url"], "token": label_studio["token"]}


def storage(s3_server, prefix):
    return {
        "bucket": BUCKET,
        "prefix": prefix,
        "endpoint_url": s3_server["endpoint"],
        "region": "us-east-1",
        "access_key": "ailab-test-access",
        "secret_key": "ailab-test-secret-0123456789",
    }


def project_task(label_studio, s3_server, **extra):
    args = dict(
        connection(label_studio),
        title=TITLE,
        classes=CLASSES,
        source_storage=storage(s3_server, "raw"),
        target_storage=storage(s3_server, "annotations"),
    )
    args.update(extra)
    return {"name": "Ensure the project", "ailab.platform.label_studio_project": args}


def test_service_ready_waits_for_label_studio_and_names_the_url_on_failure(playbook, label_studio):
    closed = "http://127.0.0.1:9/health"
    results = playbook(
        [
            {
                "name": "Wait for Label Studio",
                "ailab.platform.service_ready": {
                    "url": label_studio["url"] + "/health",
                    "body_contains": "UP",
                },
            },
            {
                "name": "Wait for a port nobody listens on",
                "ailab.platform.service_ready": {"url": closed, "timeout": 2, "interval": 0.5},
                "ignore_errors": True,
            },
        ],
        check=True,
    )
    assert results[0]["status"] == 200 and results[0]["changed"] is False
    assert results[1]["failed"] and closed in results[1]["msg"] and "last error" in results[1]["msg"]


def test_project_with_s3_storages_is_created_synced_and_then_unchanged(
    playbook, label_studio, s3_server, data
):
    check, first, second = playbook(
        [
            dict(project_task(label_studio, s3_server), check_mode=True),
            project_task(label_studio, s3_server),
            project_task(label_studio, s3_server),
        ]
    )
    assert check["changed"] and check["project_id"] is None and "create project" in check["actions"]
    assert first["changed"] and first["tasks_added"] == len(S3_KEYS) + 1
    assert first["classes"] == CLASSES
    assert first["project_url"] == f"{label_studio['url']}/projects/{first['project_id']}/"
    assert first["source_storage_id"] and first["target_storage_id"]
    assert second["changed"] is False, second["actions"]
    assert second["project_id"] == first["project_id"]


def test_images_are_imported_with_annotations_once(playbook, label_studio, data):
    args = dict(
        connection(label_studio), project=TITLE, boxes_as="annotations", images=data["local"] + data["remote"]
    )
    check, first, second = playbook(
        [
            {"name": "Import (check)", "ailab.platform.label_studio_tasks": args, "check_mode": True},
            {"name": "Import", "ailab.platform.label_studio_tasks": args},
            {"name": "Import again", "ailab.platform.label_studio_tasks": args},
        ]
    )
    assert check["changed"] and check["imported"] == len(LOCAL_NAMES)
    # The S3 images already have tasks from the storage sync: they get annotations, not new tasks.
    assert first["imported"] == len(LOCAL_NAMES) and first["existing"] == len(S3_KEYS)
    assert first["annotations_added"] == len(LOCAL_NAMES) + len(S3_KEYS)
    assert len(set(first["task_ids"])) == 10
    assert second["changed"] is False
    assert (second["imported"], second["existing"], second["annotations_added"]) == (0, 10, 0)
    assert sorted(second["task_ids"]) == sorted(first["task_ids"])


def test_export_builds_a_dataset_ultralytics_can_read(playbook, label_studio, data, workdir, monkeypatch):
    dest = workdir / "dataset"
    args = dict(connection(label_studio), project=TITLE, dest=str(dest), val_fraction=0.2, seed=3)
    check, first, second = playbook(
        [
            {"name": "Export (check)", "ailab.platform.label_studio_export": args, "check_mode": True},
            {"name": "Export", "ailab.platform.label_studio_export": args},
            {"name": "Export again", "ailab.platform.label_studio_export": args},
        ]
    )
    assert check["changed"] and check["written"]
    assert first["changed"] and first["images"] == 10 and first["skipped_unlabelled"] == 1
    assert first["counts"]["per_class"] == data["per_class"]
    assert first["counts"]["per_split"]["val"]["images"] == 2
    assert first["counts"]["per_split"]["train"]["images"] == 8
    assert first["location"] == str(dest) and first["data_yaml"] == str(dest / "data.yaml")
    assert second["changed"] is False and second["written"] == []

    # Names: the two frame0.png (and frame1.png) from cam1/ and cam2/ did not overwrite each other.
    images = sorted(p.name for p in dest.glob("images/*/*"))
    assert len(images) == 10 and len(set(images)) == 10
    assert sum(name.startswith("frame0_") for name in images) == 2
    assert {"img5.png", "img9.png"} <= set(images)

    data_yaml = yaml.safe_load((dest / "data.yaml").read_text())
    assert data_yaml["path"] == str(dest) and data_yaml["names"] == dict(enumerate(CLASSES))

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    from ultralytics.data import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    checked = check_det_dataset(str(dest / "data.yaml"))
    assert checked["nc"] == 3 and checked["names"] == dict(enumerate(CLASSES))
    instances = {name: 0 for name in CLASSES}
    for split, count in (("train", 8), ("val", 2)):
        dataset = YOLODataset(img_path=checked[split], data=checked, task="detect", imgsz=160, augment=False)
        labels = dataset.get_labels()
        assert len(labels) == count
        for label in labels:
            for cls in label["cls"].flatten().tolist():
                instances[CLASSES[int(cls)]] += 1
    assert instances == data["per_class"]

    # ultralytics' label caches next to the labels do not make the export change.
    (again,) = playbook([{"name": "Export after training", "ailab.platform.label_studio_export": args}])
    assert again["changed"] is False


def test_export_to_s3_prefix_is_idempotent(playbook, label_studio, s3_server, data):
    s3_args = {
        "endpoint_url": s3_server["endpoint"],
        "access_key": "ailab-test-access",
        "secret_key": "ailab-test-secret-0123456789",
    }
    args = dict(connection(label_studio), project=TITLE, dest=f"s3://{BUCKET}/datasets/shapes", s3=s3_args)
    first, second = playbook(
        [
            {"name": "Export to S3", "ailab.platform.label_studio_export": args},
            {"name": "Export to S3 again", "ailab.platform.label_studio_export": args},
        ]
    )
    assert first["changed"] and first["images"] == 10
    assert second["changed"] is False
    listed = s3_server["client"].list_objects_v2(Bucket=BUCKET, Prefix="datasets/shapes/")
    keys = {obj["Key"] for obj in listed["Contents"]}
    assert "datasets/shapes/data.yaml" in keys
    assert sum(key.endswith(".txt") for key in keys) == 10
    body = s3_server["client"].get_object(Bucket=BUCKET, Key="datasets/shapes/data.yaml")["Body"].read()
    assert "path" not in yaml.safe_load(body)


def test_class_order_given_by_the_user_is_the_yolo_order(playbook, label_studio, workdir):
    dest = workdir / "reordered"
    wanted = ["triangle", "square", "circle"]
    (result,) = playbook(
        [
            {
                "name": "Export with another class order",
                "ailab.platform.label_studio_export": dict(
                    connection(label_studio), project=TITLE, dest=str(dest), classes=wanted
                ),
            }
        ]
    )
    assert result["classes"] == wanted
    assert yaml.safe_load((dest / "data.yaml").read_text())["names"] == dict(enumerate(wanted))
    original = workdir / "dataset" / "labels"
    for label in dest.glob("labels/*/*.txt"):
        before = next(original.glob("*/" + label.name)).read_text().split("\n")
        after = label.read_text().split("\n")
        for old, new in zip(before, after, strict=False):
            if old:
                assert wanted[int(new.split()[0])] == CLASSES[int(old.split()[0])]


def test_removing_the_project(playbook, label_studio, s3_server):
    args = dict(connection(label_studio), title="Shapes to delete", classes=["a", "b"])
    created, removed, again = playbook(
        [
            {"name": "Create", "ailab.platform.label_studio_project": args},
            {"name": "Remove", "ailab.platform.label_studio_project": dict(args, state="absent")},
            {"name": "Remove again", "ailab.platform.label_studio_project": dict(args, state="absent")},
        ]
    )
    assert created["changed"] and removed["changed"] and removed["project_id"] == created["project_id"]
    assert again["changed"] is False
