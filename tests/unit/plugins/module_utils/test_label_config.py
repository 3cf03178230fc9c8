"""Label config generation and parsing (plugins/module_utils/label_config.py)."""

import xml.etree.ElementTree as ET

import pytest
from ansible_collections.ailab.platform.plugins.module_utils.label_config import (
    LabelConfigError,
    box_label_config,
    parse_box_config,
    validate_class_names,
)


def test_generated_config_keeps_the_class_order_and_numbers_categories():
    config = box_label_config(["zebra", "apple", "mango"])
    labels = ET.fromstring(config).findall("./RectangleLabels/Label")
    assert [label.get("value") for label in labels] == ["zebra", "apple", "mango"]
    # category makes Label Studio's own YOLO export follow this order instead of the alphabet.
    assert [label.get("category") for label in labels] == ["0", "1", "2"]


def test_generated_config_disables_rotation_unless_asked():
    rect = ET.fromstring(box_label_config(["a"])).find("RectangleLabels")
    assert rect.get("canRotate") == "false"
    rect = ET.fromstring(box_label_config(["a"], allow_rotation=True)).find("RectangleLabels")
    assert rect.get("canRotate") is None


def test_generated_config_escapes_odd_names_and_reads_back():
    names = ['say "hi"', "a<b>&c", "émoji 🚗"]
    parsed = parse_box_config(box_label_config(names))
    assert parsed == {"classes": names, "image_name": "image", "image_key": "image", "labels_name": "label"}


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ([], "classes is empty"),
        (["cat", "dog", "cat"], "duplicate class names: cat"),
        (["cat", " cat "], "duplicate class names: cat"),
        (["cat", ""], "must not be empty"),
        (["cat", 3], "must be strings"),
    ],
)
def test_bad_class_lists_are_refused_with_the_reason(classes, message):
    with pytest.raises(LabelConfigError, match=message):
        validate_class_names(classes)


def test_parse_a_hand_written_config():
    config = """
    <View>
      <Header value="Find the parts"/>
      <Image name="photo" value="$img"/>
      <RectangleLabels name="parts" toName="photo">
        <Label value="bolt"/><Label value="nut"/>
      </RectangleLabels>
    </View>"""
    assert parse_box_config(config) == {
        "classes": ["bolt", "nut"],
        "image_name": "photo",
        "image_key": "img",
        "labels_name": "parts",
    }


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("<View><Image name='i' value='$image'/>", "not valid XML"),
        ("<View><Image name='i' value='$image'/><Choices name='c' toName='i'/></View>", "no RectangleLabels"),
        (
            "<View><Image name='i' value='$image'/><RectangleLabels name='l' toName='x'><Label value='a'/>"
            "</RectangleLabels></View>",
            "toName",
        ),
        ("<View><Image name='i' value='$image'/><RectangleLabels name='l' toName='i'/></View>", "no <Label"),
        (
            "<View><Image name='i' value='$image'/><RectangleLabels name='l' toName='i'><Label value='a'/>"
            "<Label value='a'/></RectangleLabels></View>",
            "duplicate class names: a",
        ),
    ],
)
def test_bad_configs_are_refused_with_the_reason(config, message):
    with pytest.raises(LabelConfigError, match=message):
        parse_box_config(config)
