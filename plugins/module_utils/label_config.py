# Copyright: ailab maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Label Studio label configs for object detection: generate one from class names, read one back.

Pure functions (no I/O): the modules and the unit tests call them with plain values.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

# Distinct, readable colours for the labelling UI; cycled when there are more classes.
PALETTE = (
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#f032e6",
    "#bfef45",
    "#469990",
    "#9a6324",
    "#800000",
    "#000075",
)

# Control tags whose <Label> children are object classes with boxes.
BOX_TAGS = ("RectangleLabels",)


class LabelConfigError(ValueError):
    """A label config or class list that cannot be used."""


def validate_class_names(classes: list[str]) -> list[str]:
    """Return the class names stripped, or raise LabelConfigError naming what is wrong."""
    if not classes:
        raise LabelConfigError("classes is empty: give at least one class name")
    names = []
    seen = set()
    duplicates = []
    for raw in classes:
        if not isinstance(raw, str):
            raise LabelConfigError("class names must be strings, got %r" % (raw,))
        name = raw.strip()
        if not name:
            raise LabelConfigError("class names must not be empty")
        if name in seen and name not in duplicates:
            duplicates.append(name)
        seen.add(name)
        names.append(name)
    if duplicates:
        raise LabelConfigError("duplicate class names: %s" % ", ".join(duplicates))
    return names


def box_label_config(
    classes: list[str],
    image_name: str = "image",
    labels_name: str = "label",
    allow_rotation: bool = False,
) -> str:
    """Build a label config for bounding boxes over one image per task.

    Each label carries ``category="<index>"`` so that Label Studio's own YOLO export numbers the
    classes in the given order (without it, it numbers them alphabetically). Rotation is off by
    default: YOLO boxes are axis-aligned, so a rotated box can only be exported as its enclosing box.
    """
    names = validate_class_names(classes)
    view = ET.Element("View")
    ET.SubElement(view, "Image", {"name": image_name, "value": "$" + image_name, "zoom": "true"})
    attrs = {"name": labels_name, "toName": image_name}
    if not allow_rotation:
        attrs["canRotate"] = "false"
    rect = ET.SubElement(view, "RectangleLabels", attrs)
    for index, name in enumerate(names):
        ET.SubElement(
            rect,
            "Label",
            {"value": name, "category": str(index), "background": PALETTE[index % len(PALETTE)]},
        )
    return ET.tostring(view, encoding="unicode")


def parse_box_config(label_config: str) -> dict:
    """Read what the box tools need from a label config.

    Returns ``{"classes": [...], "image_name": str, "image_key": str, "labels_name": str}``:
    the class names in the config's order, the Image tag's name, the task data key it shows
    (``$image`` -> ``image``) and the RectangleLabels tag's name.
    """
    try:
        root = ET.fromstring(label_config)
    except ET.ParseError as exc:
        raise LabelConfigError("label_config is not valid XML: %s" % exc) from None
    images = {}
    for tag in root.iter("Image"):
        name = tag.get("name")
        value = tag.get("value", "")
        if name and value.startswith("$"):
            images[name] = value[1:]
    controls = [tag for tag in root.iter() if tag.tag in BOX_TAGS]
    if not controls:
        raise LabelConfigError("label_config has no RectangleLabels tag: it does not describe boxes")
    control = controls[0]
    to_name = control.get("toName")
    if not control.get("name") or to_name not in images:
        raise LabelConfigError(
            "label_config: RectangleLabels needs a name and a toName that names an Image tag "
            'with value="$<key>" (found toName=%r, images=%s)' % (to_name, sorted(images))
        )
    classes = [label.get("value", "") for tag in controls for label in tag.iter("Label")]
    if not classes:
        raise LabelConfigError("label_config: RectangleLabels has no <Label value=...> children")
    # The same checks as for a class list: a duplicate would make two YOLO ids for one name.
    classes = validate_class_names(classes)
    return {
        "classes": classes,
        "image_name": to_name,
        "image_key": images[to_name],
        "labels_name": control.get("name"),
    }
