#!/usr/bin/python
# Copyright: ailab maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: label_studio_export
short_description: Export a Label Studio project as a ready-to-train ultralytics YOLO dataset
description:
  - Reads every task of a project (Label Studio's JSON export) and writes C(images/{train,val}),
    C(labels/{train,val}) and C(data.yaml) to a local folder or an S3 prefix.
  - Classes are mapped by name to the label config's order (or O(classes)); Label Studio's own YOLO
    export numbers them alphabetically instead.
  - A rotated box (degrees clockwise about its top-left corner) becomes the axis-aligned box that
    encloses it. Box coordinates are read as percent of C(original_width)/C(original_height).
  - Each task's latest annotation that was not skipped counts; tasks without one are left out and
    counted in RV(skipped_unlabelled). An annotation with no boxes gives an empty label file
    (a background image).
  - File names are the images' own, with a short hash of the source added when two images share a
    name (two folders with C(img.jpg)), so no label overwrites another. The name is read from
    every URL form Label Studio gives a task - uploads (C(/data/upload/<project>/<prefix>-<name>),
    without the prefix), local files (C(/data/local-files/?d=<path>)), cloud storage
    (C(s3://), C(gs://), C(azure-blob://) and the proxied C(/tasks/<id>/presign/?fileuri=<base64>))
    and plain URLs.
  - The train/val split is deterministic for O(seed) and stays stable as images are added.
  - Idempotent. A manifest (C(.ailab-export.json)) records the files written; a re-export of the
    same annotations fetches and writes nothing and reports C(changed=false). Files of an earlier
    export that are no longer part of the dataset are removed.
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
  dest:
    description:
      - A local folder on the host that runs the module, or C(s3://bucket/prefix).
      - A local C(data.yaml) gets an absolute C(path:); an S3 one has none, so ultralytics resolves
        the folders against wherever the dataset is downloaded.
    type: str
    required: true
  classes:
    description:
      - Class names in the wanted YOLO order. Defaults to the order of the label config. A box with
        a label that is not listed fails the export.
    type: list
    elements: str
  val_fraction:
    description:
      - Share of the images that go to the validation split (at least one image when there are two or more).
    type: float
    default: 0.2
  seed:
    description: Seed of the split.
    type: int
    default: 0
  s3:
    description:
      - S3 access for an O(dest) on S3, and for fetching C(s3://) images directly. Without it, C(s3://)
        images are fetched through Label Studio's resolver (presigned URLs of the project's storage).
    type: dict
    suboptions:
      endpoint_url:
        description: S3 endpoint URL (MinIO, Ceph); empty for AWS.
        type: str
      access_key:
        description: S3 access key id.
        type: str
      secret_key:
        description: S3 secret access key.
        type: str
      region:
        description: S3 region.
        type: str
        default: us-east-1
requirements:
  - boto3 on the host that runs the module, when O(dest) is on S3 or O(s3) is given.
notes:
  - Supports check mode.
"""

EXAMPLES = r"""
# Ad hoc or outside the lab inventories, name the Python that has the requirements:
#   ansible localhost -m ailab.platform.label_studio_export -a ... \
#     -e ansible_python_interpreter=.venv/bin/python
- name: Export the parts project for training
  ailab.platform.label_studio_export:
    url: http://labelstudio.lab.local
    token: "{{ label_studio_token }}"
    project: Parts detection
    dest: /srv/datasets/parts
  register: parts_dataset

- name: Show the class counts
  ansible.builtin.debug:
    var: parts_dataset.counts.per_class

- name: Export to the lab's S3 for the training Job
  ailab.platform.label_studio_export:
    url: http://labelstudio.lab.local
    token: "{{ label_studio_token }}"
    project: Parts detection
    dest: s3://datasets/parts/yolo
    classes: [bolt, nut, washer]
    val_fraction: 0.15
    seed: 7
    s3:
      endpoint_url: http://minio.lab.local:9000
      access_key: "{{ lab_s3_access_key }}"
      secret_key: "{{ lab_s3_secret_key }}"
"""

RETURN = r"""
project_id:
  description: Id of the exported project.
  returned: always
  type: int
location:
  description: Where the dataset is (absolute folder or C(s3://) prefix).
  returned: always
  type: str
  sample: /srv/datasets/parts
data_yaml:
  description: Path or URI of the dataset's data.yaml.
  returned: always
  type: str
  sample: /srv/datasets/parts/data.yaml
classes:
  description: Class names in YOLO order.
  returned: always
  type: list
  elements: str
images:
  description: Images in the dataset.
  returned: always
  type: int
  sample: 10
counts:
  description: Boxes per class name and images and boxes per split.
  returned: always
  type: dict
  sample:
    per_class: {bolt: 12, nut: 9}
    per_split: {train: {images: 8, boxes: 17}, val: {images: 2, boxes: 4}}
skipped_unlabelled:
  description: Tasks left out because they have no annotation (or only skipped ones).
  returned: always
  type: int
  sample: 3
written:
  description: Dataset-relative paths written (or that check mode would write).
  returned: always
  type: list
  elements: str
removed:
  description: Dataset-relative paths of an earlier export that were removed.
  returned: always
  type: list
  elements: str
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.ailab.platform.plugins.module_utils.dataset_export import (
    LocalStore,
    S3Store,
    write_dataset,
)
from ansible_collections.ailab.platform.plugins.module_utils.label_config import (
    LabelConfigError,
    parse_box_config,
    validate_class_names,
)
from ansible_collections.ailab.platform.plugins.module_utils.label_studio import (
    CONNECTION_ARGSPEC,
    LabelStudioClient,
    LabelStudioError,
)
from ansible_collections.ailab.platform.plugins.module_utils.s3 import (
    BOTO3_IMPORT_ERROR,
    HAS_BOTO3,
    S3,
    S3_ARGSPEC,
    S3Error,
    split_s3_url,
)
from ansible_collections.ailab.platform.plugins.module_utils.yolo_dataset import (
    DatasetError,
    build_export_plan,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            CONNECTION_ARGSPEC,
            project={"type": "str", "required": True},
            dest={"type": "str", "required": True},
            classes={"type": "list", "elements": "str"},
            val_fraction={"type": "float", "default": 0.2},
            seed={"type": "int", "default": 0},
            s3={"type": "dict", "options": S3_ARGSPEC},
        ),
        supports_check_mode=True,
    )
    params = module.params
    to_s3 = params["dest"].startswith("s3://")
    s3 = None
    if (to_s3 or params["s3"]) and not HAS_BOTO3:
        module.fail_json(msg=missing_required_lib("boto3"), exception=BOTO3_IMPORT_ERROR)
    try:
        if to_s3 or params["s3"]:
            s3_params = params["s3"] or {}
            s3 = S3(
                s3_params.get("endpoint_url"),
                s3_params.get("access_key"),
                s3_params.get("secret_key"),
                s3_params.get("region"),
                params["timeout"],
            )
        if to_s3:
            bucket, prefix = split_s3_url(params["dest"])
            s3.check_bucket(bucket)
            store = S3Store(s3, bucket, prefix)
            yaml_path = None
        else:
            store = LocalStore(params["dest"])
            yaml_path = store.root

        client = LabelStudioClient(
            params["url"], params["token"], params["validate_certs"], params["timeout"]
        )
        project = client.require_project(params["project"])
        interface = parse_box_config(project["label_config"])
        classes = validate_class_names(params["classes"]) if params["classes"] else interface["classes"]
        plan = build_export_plan(
            client.export_tasks(project["id"]),
            classes,
            interface["image_key"],
            val_fraction=params["val_fraction"],
            seed=params["seed"],
            from_name=interface["labels_name"],
        )

        def fetch(item):
            return client.fetch_image(item["task_id"], item["uri"], s3.get_url if s3 is not None else None)

        outcome = write_dataset(
            store, plan, classes, fetch, check_mode=module.check_mode, yaml_path=yaml_path
        )
    except (LabelStudioError, LabelConfigError, DatasetError, S3Error) as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg="Cannot write the dataset to %s: %s" % (params["dest"], exc))

    location = store.location
    module.exit_json(
        changed=outcome["changed"],
        project_id=project["id"],
        location=location,
        data_yaml=(location.rstrip("/") + "/data.yaml") if to_s3 else str(Path(location, "data.yaml")),
        classes=classes,
        images=plan["counts"]["images"],
        counts={"per_class": plan["counts"]["per_class"], "per_split": plan["counts"]["per_split"]},
        skipped_unlabelled=plan["skipped_unlabelled"],
        written=outcome["written"],
        removed=outcome["removed"],
    )


if __name__ == "__main__":
    main()
