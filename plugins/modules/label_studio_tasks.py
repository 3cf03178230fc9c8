#!/usr/bin/python
# Copyright: ailab maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: label_studio_tasks
short_description: Import images into a Label Studio project as tasks, with optional boxes
description:
  - Creates one task per image, from a local file (uploaded to Label Studio), an S3 key (served
    through the project's S3 source storage) or a URL.
  - Boxes in the YOLO class space (normalised centre, width, height; class by index or name) become
    predictions (pre-annotations for the annotators) or annotations (ground truth to import).
  - Idempotent. An S3 key or URL is recognised by its URI, also when a storage sync created the
    task; a local file by the SHA-256 of its content. Images already there are not imported again,
    and boxes are added to an existing task only when it has none of that kind.
version_added: 0.1.0
author:
  - ailab maintainers (@ailab)
extends_documentation_fragment:
  - ailab.platform.python_interpreter
  - ailab.platform.label_studio
options:
  project:
    description: Project title, or its numeric id.
    type: str
    required: true
  images:
    description: The images to import.
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description: Local file on the host that runs the module; uploaded to Label Studio.
        type: path
      s3_key:
        description: Object key; the task points at C(s3://<bucket>/<s3_key>).
        type: str
      bucket:
        description:
          - Bucket of O(images[].s3_key); defaults to O(s3_bucket), then to the project's S3 source storage.
        type: str
      url:
        description: An image URL the annotators' browsers can load.
        type: str
      boxes:
        description:
          - Boxes as dicts C({class, x_center, y_center, width, height, score}) or lists
            C([class, x_center, y_center, width, height]); coordinates normalised to 0..1;
            C(class) is an index into O(classes) (or the label config's classes) or a class name.
        type: list
        elements: raw
      label_file:
        description: A YOLO label file with the boxes (C(class x_center y_center width height) per line).
        type: path
  classes:
    description:
      - The YOLO class names that numeric box classes index, when they differ from the label
        config's order. Every name must be a label of the project.
    type: list
    elements: str
  boxes_as:
    description: Import boxes as V(predictions) (pre-annotations) or as V(annotations) (ground truth).
    type: str
    choices: [predictions, annotations]
    default: predictions
  model_version:
    description: Model version recorded on predictions.
    type: str
    default: ailab
  s3_bucket:
    description: Default bucket for O(images[].s3_key).
    type: str
notes:
  - Supports check mode.
"""

EXAMPLES = r"""
# Ad hoc or outside the lab inventories, name the Python that has the requirements:
#   ansible localhost -m ailab.platform.label_studio_tasks -a ... \
#     -e ansible_python_interpreter=.venv/bin/python
- name: Import the new images from the controller with the detector's predictions
  ailab.platform.label_studio_tasks:
    url: http://labelstudio.lab.local
    token: "{{ label_studio_token }}"
    project: Parts detection
    images:
      - path: /srv/captures/cam1/0001.jpg
        label_file: /srv/captures/cam1/0001.txt
      - path: /srv/captures/cam2/0001.jpg
        boxes:
          - {class: bolt, x_center: 0.5, y_center: 0.4, width: 0.2, height: 0.1, score: 0.87}
    model_version: yolov8n-2026-11

- name: Import objects already in the project's bucket as ground truth
  ailab.platform.label_studio_tasks:
    url: http://labelstudio.lab.local
    token: "{{ label_studio_token }}"
    project: Parts detection
    boxes_as: annotations
    images:
      - s3_key: parts/raw/0002.jpg
        boxes: [[0, 0.5, 0.5, 0.25, 0.25]]
"""

RETURN = r"""
project_id:
  description: Id of the project.
  returned: always
  type: int
  sample: 3
imported:
  description: Tasks created.
  returned: always
  type: int
  sample: 10
existing:
  description: Images that already had a task (not imported again).
  returned: always
  type: int
  sample: 0
predictions_added:
  description: Predictions created (on new or existing tasks).
  returned: always
  type: int
annotations_added:
  description: Annotations created (on new or existing tasks).
  returned: always
  type: int
task_ids:
  description:
    - Task id of each distinct requested image, existing ones first.
    - Null for the tasks that check mode would create.
  returned: always
  type: list
  elements: int
imported_sources:
  description: Paths or URIs of the images that were imported.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ailab.platform.plugins.module_utils.label_config import (
    LabelConfigError,
    parse_box_config,
)
from ansible_collections.ailab.platform.plugins.module_utils.label_studio import (
    CONNECTION_ARGSPEC,
    LabelStudioClient,
    LabelStudioError,
)
from ansible_collections.ailab.platform.plugins.module_utils.label_studio_tasks import import_tasks
from ansible_collections.ailab.platform.plugins.module_utils.yolo_dataset import DatasetError

IMAGE_SPEC = {
    "path": {"type": "path"},
    "s3_key": {"type": "str", "no_log": False},
    "bucket": {"type": "str"},
    "url": {"type": "str"},
    "boxes": {"type": "list", "elements": "raw"},
    "label_file": {"type": "path"},
}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            CONNECTION_ARGSPEC,
            project={"type": "str", "required": True},
            images={"type": "list", "elements": "dict", "required": True, "options": IMAGE_SPEC},
            classes={"type": "list", "elements": "str"},
            boxes_as={"type": "str", "choices": ["predictions", "annotations"], "default": "predictions"},
            model_version={"type": "str", "default": "ailab"},
            s3_bucket={"type": "str"},
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        client = LabelStudioClient(
            params["url"], params["token"], params["validate_certs"], params["timeout"]
        )
        project = client.require_project(params["project"])
        interface = parse_box_config(project["label_config"])
        default_bucket = params["s3_bucket"]
        if not default_bucket and any(
            image.get("s3_key") and not image.get("bucket") for image in params["images"]
        ):
            storages = (
                client.request("GET", "/api/storages/s3/?project=%d" % project["id"], what="storages") or []
            )
            default_bucket = storages[0]["bucket"] if storages else None
        options = {
            "classes": params["classes"],
            "boxes_as": params["boxes_as"],
            "model_version": params["model_version"],
            "default_bucket": default_bucket,
        }
        result = import_tasks(
            client, project, interface, params["images"], options, check_mode=module.check_mode
        )
    except (LabelStudioError, LabelConfigError, DatasetError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(project_id=project["id"], **result)


if __name__ == "__main__":
    main()
