"""Label Studio JSON -> YOLO conversion, naming and splitting (plugins/module_utils/yolo_dataset.py)."""

import base64

import pytest
import yaml
from ansible_collections.ailab.platform.plugins.module_utils.yolo_dataset import (
    DatasetError,
    assign_splits,
    build_export_plan,
    data_yaml_text,
    parse_yolo_label_text,
    pick_annotation,
    region_to_yolo,
    source_basename,
    unique_file_stems,
    yolo_to_region,
)


def box(x, y, w, h, label="cat", *, rotation=0, width=200, height=100):
    return {
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": width,
        "original_height": height,
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation, "rectanglelabels": [label]},
    }


def task(task_id, uri, regions=None, cancelled=False, extra=None):
    annotations = [] if regions is None else [{"id": task_id, "result": regions, "was_cancelled": cancelled}]
    return {"id": task_id, "data": {"image": uri}, "annotations": annotations + (extra or [])}


def test_percent_box_becomes_normalised_centre_box():
    assert region_to_yolo({"x": 10, "y": 20, "width": 30, "height": 40}) == pytest.approx(
        (0.25, 0.4, 0.3, 0.4)
    )


def test_box_is_clipped_to_the_image():
    assert region_to_yolo({"x": 90, "y": -10, "width": 20, "height": 30}) == pytest.approx(
        (0.95, 0.1, 0.1, 0.2)
    )
    assert region_to_yolo({"x": 100, "y": 10, "width": 10, "height": 10}) is None


def test_rotated_box_becomes_its_enclosing_box_in_pixels():
    # 60x10 px box at (20, 20) px on a 200x100 image, turned 90 degrees clockwise about its
    # top-left corner: it then spans x 10..20 px and y 20..80 px.
    value = {"x": 10, "y": 20, "width": 30, "height": 10, "rotation": 90}
    assert region_to_yolo(value, 200, 100) == pytest.approx((0.075, 0.5, 0.05, 0.6))


def test_rotation_by_45_degrees_on_a_wide_image():
    # A 100x0-ish line would be ambiguous; use a 40x20 px box at (100, 20) px on 200x100 rotated 45.
    value = {"x": 50, "y": 20, "width": 20, "height": 20, "rotation": 45}
    xc, yc, w, h = region_to_yolo(value, 200, 100)
    r = 2**0.5 / 2
    # Corners: (0,0), (40r, 40r), (40r - 20r, 40r + 20r), (-20r, 20r) relative to (100, 20).
    left, right = 100 - 20 * r, 100 + 40 * r
    top, bottom = 20, 20 + 60 * r
    assert (xc, yc, w, h) == pytest.approx(
        ((left + right) / 400, (top + bottom) / 200, (right - left) / 200, (bottom - top) / 100)
    )


def test_full_turn_is_no_rotation_and_rotation_needs_the_image_size():
    assert region_to_yolo({"x": 10, "y": 20, "width": 30, "height": 40, "rotation": 360}) == pytest.approx(
        (0.25, 0.4, 0.3, 0.4)
    )
    with pytest.raises(DatasetError, match="original_width"):
        region_to_yolo({"x": 10, "y": 20, "width": 30, "height": 40, "rotation": 30})


def test_yolo_to_region_round_trips_and_refuses_pixels():
    region = yolo_to_region(0.25, 0.4, 0.3, 0.4)
    assert region_to_yolo(region) == pytest.approx((0.25, 0.4, 0.3, 0.4))
    with pytest.raises(DatasetError, match=r"outside 0\.\.1"):
        yolo_to_region(120, 0.4, 0.3, 0.4)


def test_parse_yolo_label_text():
    assert parse_yolo_label_text("0 0.5 0.5 0.1 0.2\n\n2 0.1 0.1 0.1 0.1\n") == [
        (0, 0.5, 0.5, 0.1, 0.2),
        (2, 0.1, 0.1, 0.1, 0.1),
    ]
    with pytest.raises(DatasetError, match="line 1"):
        parse_yolo_label_text("0 0.5 0.5\n")


def test_the_latest_annotation_that_was_not_skipped_counts():
    t = {
        "annotations": [
            {"id": 1, "updated_at": "2026-01-01T00:00:00Z", "result": ["old"]},
            {"id": 2, "updated_at": "2026-03-01T00:00:00Z", "result": ["new"]},
            {"id": 3, "updated_at": "2026-04-01T00:00:00Z", "was_cancelled": True, "result": []},
        ]
    }
    assert pick_annotation(t)["id"] == 2
    assert pick_annotation({"annotations": [{"id": 1, "was_cancelled": True}]}) is None


def test_names_stay_unique_when_folders_share_a_basename():
    uris = ["s3://b/cam1/img.jpg", "s3://b/cam2/img.jpg", "s3://b/cam2/other.jpg", "s3://b/x/img.png"]
    stems = unique_file_stems(uris)
    assert len(set(stems)) == 4
    assert stems[2] == "other"
    assert all(s.startswith("img_") for s in stems[:2] + stems[3:])
    # Stable: the same URIs give the same names, whatever else is in the dataset.
    assert unique_file_stems(list(reversed(uris))) == list(reversed(stems))


def test_names_ignore_case_and_number_repeated_uris():
    assert len({s.lower() for s in unique_file_stems(["s3://b/a/IMG.jpg", "s3://b/b/img.jpg"])}) == 2
    assert unique_file_stems(["s3://b/a.jpg", "s3://b/a.jpg"]) == [
        unique_file_stems(["s3://b/a.jpg", "s3://b/a.jpg"])[0],
        unique_file_stems(["s3://b/a.jpg", "s3://b/a.jpg"])[0] + "_2",
    ]


def _fileuri(storage_uri: str) -> str:
    return base64.urlsafe_b64encode(storage_uri.encode()).decode().rstrip("=")


def test_upload_names_drop_label_studios_prefix():
    assert source_basename("/data/upload/3/1a2b3c4d-photo.jpg") == "photo.jpg"
    assert source_basename("http://ls.lab:8080/data/upload/3/1a2b3c4d-photo.jpg") == "photo.jpg"
    assert source_basename("s3://bucket/1a2b3c4d-photo.jpg") == "1a2b3c4d-photo.jpg"


def test_local_files_names_come_from_the_d_parameter():
    assert source_basename("/data/local-files/?d=coco/val2017/000000000009.jpg") == "000000000009.jpg"
    assert source_basename("/data/local-files/?d=my%20images%2Fcat%201.png") == "cat 1.png"
    stems = unique_file_stems(
        ["/data/local-files/?d=a/000000000009.jpg", "/data/local-files/?d=a/000000000025.jpg"]
    )
    assert stems == ["000000000009", "000000000025"]


@pytest.mark.parametrize(
    "uri", ["s3://bucket/train/cat.jpg", "gs://bucket/train/cat.jpg", "azure-blob://container/train/cat.jpg"]
)
def test_cloud_storage_names(uri):
    assert source_basename(uri) == "cat.jpg"


@pytest.mark.parametrize(
    "storage", ["s3://bucket/train/cat.jpg", "gs://bucket/x/cat.jpg", "azure-blob://c/cat.jpg"]
)
def test_presigned_cloud_storage_names_come_from_the_fileuri(storage):
    assert source_basename(f"/tasks/17/presign/?fileuri={_fileuri(storage)}") == "cat.jpg"
    padded = base64.b64encode(storage.encode()).decode()
    assert source_basename(f"http://ls.lab:8080/projects/2/presign/?fileuri={padded}") == "cat.jpg"


def test_plain_url_names():
    assert source_basename("https://host/x/y.png?sig=1") == "y.png"
    assert source_basename("https://bucket.s3.amazonaws.com/a/dog%20b.jpg?X-Amz-Signature=ab") == "dog b.jpg"
    assert source_basename("https://host/x/y.png#frag") == "y.png"


def test_split_is_deterministic_for_a_seed_and_stable_when_images_are_added():
    stems = [f"img{i:03d}" for i in range(100)]
    first = assign_splits(stems, 0.2, seed=1)
    assert first == assign_splits(list(reversed(stems)), 0.2, seed=1)
    assert sum(1 for s in first.values() if s == "val") == 20
    assert first != assign_splits(stems, 0.2, seed=2)
    more = assign_splits([*stems, "new1", "new2", "new3", "new4", "new5"], 0.2, seed=1)
    moved = [s for s in stems if first[s] != more[s]]
    assert len(moved) <= 2


def test_split_keeps_at_least_one_image_on_each_side():
    assert sorted(assign_splits(["a", "b"], 0.01, seed=0).values()) == ["train", "val"]
    assert assign_splits(["a"], 0.2, seed=0) == {"a": "train"}
    assert set(assign_splits(["a", "b", "c"], 0.0, seed=0).values()) == {"train"}
    with pytest.raises(DatasetError):
        assign_splits(["a"], 1.0, seed=0)


def test_data_yaml_lists_classes_in_order_with_an_absolute_or_no_path():
    text = data_yaml_text(["zebra", "apple", 'odd "name"'], path="/srv/ds")
    data = yaml.safe_load(text)
    assert data["path"] == "/srv/ds"
    assert data["names"] == {0: "zebra", 1: "apple", 2: 'odd "name"'}
    assert (data["train"], data["val"], data["nc"]) == ("images/train", "images/val", 3)
    assert "path" not in yaml.safe_load(data_yaml_text(["a"]))


def test_plan_maps_classes_by_name_and_skips_unlabelled_tasks():
    tasks = [
        task(1, "s3://b/one.jpg", [box(10, 20, 30, 40, "zebra"), box(0, 0, 10, 10, "apple")]),
        task(2, "/data/upload/1/abcdef01-two.jpg", []),  # labelled: nothing in it
        task(3, "s3://b/three.jpg"),  # not labelled
        task(4, "s3://b/four.jpg", [box(0, 0, 50, 50, "zebra")], cancelled=True),  # skipped by annotator
    ]
    plan = build_export_plan(tasks, ["zebra", "apple"], "image", val_fraction=0.5, seed=0)
    assert plan["skipped_unlabelled"] == 2
    by_task = {item["task_id"]: item for item in plan["items"]}
    assert set(by_task) == {1, 2}
    assert (
        by_task[1]["label_text"]
        == "0 0.250000 0.400000 0.300000 0.400000\n1 0.050000 0.050000 0.100000 0.100000\n"
    )
    assert by_task[2]["label_text"] == ""
    assert by_task[2]["stem"] == "two"
    assert plan["counts"]["per_class"] == {"zebra": 1, "apple": 1}
    assert sorted(item["split"] for item in plan["items"]) == ["train", "val"]
    item = by_task[1]
    assert item["image"] == "images/{}/one.jpg".format(item["split"])
    assert item["label"] == "labels/{}/one.txt".format(item["split"])


def test_plan_refuses_a_label_that_is_not_a_class():
    with pytest.raises(DatasetError, match="'dog', which is not one of the classes"):
        build_export_plan([task(1, "s3://b/a.jpg", [box(1, 1, 5, 5, "dog")])], ["cat"], "image")


def test_plan_only_reads_the_box_tool_it_is_told_about():
    other = box(1, 1, 5, 5, "dog")
    other["from_name"] = "other_tool"
    plan = build_export_plan([task(1, "s3://b/a.jpg", [other])], ["cat"], "image", from_name="label")
    assert plan["items"][0]["label_text"] == ""
