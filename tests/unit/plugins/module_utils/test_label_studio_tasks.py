"""Task import planning (plugins/module_utils/label_studio_tasks.py)."""

import pytest
from ansible_collections.ailab.platform.plugins.module_utils.label_studio_tasks import (
    boxes_to_result,
    describe_image,
    index_existing,
    normalise_box,
    read_boxes,
)
from ansible_collections.ailab.platform.plugins.module_utils.yolo_dataset import DatasetError

CLASSES = ["cat", "dog"]


def test_boxes_by_index_or_name_as_dict_or_list():
    assert normalise_box([1, 0.5, 0.5, 0.2, 0.2], CLASSES) == ("dog", 0.5, 0.5, 0.2, 0.2, None)
    assert normalise_box(
        {"class": "cat", "x_center": 0.1, "y_center": 0.2, "width": 0.1, "height": 0.1, "score": 0.9}, CLASSES
    ) == ("cat", 0.1, 0.2, 0.1, 0.1, 0.9)
    assert normalise_box(["1", 0.5, 0.5, 0.2, 0.2], CLASSES)[0] == "dog"


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ([2, 0.5, 0.5, 0.1, 0.1], "outside the 2 classes"),
        (["cow", 0.5, 0.5, 0.1, 0.1], "not one of the classes"),
        ([0, 0.5, 0.5], "needs \\[class"),
        ({"class": 0, "x_center": 0.5}, "lacks y_center, width, height"),
        ([True, 0.5, 0.5, 0.1, 0.1], "index or a name"),
        ([0, "a", 0.5, 0.1, 0.1], "non-numeric"),
    ],
)
def test_bad_boxes_are_refused_with_the_reason(box, message):
    with pytest.raises(DatasetError, match=message):
        normalise_box(box, CLASSES)


def test_result_regions_are_percent_boxes_with_the_mean_score():
    result, score = boxes_to_result(
        [
            {"class": 0, "x_center": 0.5, "y_center": 0.5, "width": 0.2, "height": 0.4, "score": 0.8},
            {"class": 1, "x_center": 0.5, "y_center": 0.5, "width": 0.2, "height": 0.4, "score": 0.6},
        ],
        CLASSES,
        "label",
        "image",
    )
    assert score == pytest.approx(0.7)
    assert result[0]["value"] == {
        "x": 40.0,
        "y": 30.0,
        "width": 20.0,
        "height": 40.0,
        "rotation": 0,
        "rectanglelabels": ["cat"],
    }
    assert (result[0]["from_name"], result[0]["to_name"], result[0]["type"]) == (
        "label",
        "image",
        "rectanglelabels",
    )


def test_describe_image_kinds_and_default_bucket(tmp_path):
    assert describe_image({"s3_key": "/raw/a.jpg"}, "lab") == {
        "kind": "uri",
        "uri": "s3://lab/raw/a.jpg",
        "name": "/raw/a.jpg",
    }
    assert describe_image({"s3_key": "a.jpg", "bucket": "other"}, "lab")["uri"] == "s3://other/a.jpg"
    assert describe_image({"path": str(tmp_path / "x.png")}, None)["name"] == "x.png"
    with pytest.raises(DatasetError, match="has no bucket"):
        describe_image({"s3_key": "a.jpg"}, None)
    with pytest.raises(DatasetError, match="exactly one of"):
        describe_image({"s3_key": "a.jpg", "url": "http://x/a.jpg"}, "lab")


def test_read_boxes_from_a_label_file(tmp_path):
    label = tmp_path / "a.txt"
    label.write_text("1 0.5 0.5 0.2 0.2\n")
    assert read_boxes({"label_file": str(label)}) == [[1, 0.5, 0.5, 0.2, 0.2]]
    with pytest.raises(DatasetError, match="cannot read label_file"):
        read_boxes({"label_file": str(tmp_path / "missing.txt")})
    with pytest.raises(DatasetError, match="not both"):
        read_boxes({"label_file": str(label), "boxes": []})


def test_existing_tasks_are_known_by_uri_and_content_hash():
    tasks = [
        {"id": 1, "data": {"image": "s3://lab/raw/a.jpg"}},
        {"id": 2, "data": {"image": "/data/upload/1/abcd1234-b.jpg", "ailab_sha256": "f00d"}},
    ]
    index = index_existing(tasks, "image")
    assert index["s3://lab/raw/a.jpg"]["id"] == 1
    assert index["sha256:f00d"]["id"] == 2
