#!/usr/bin/python
# Copyright: ailab maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: label_studio_project
short_description: Ensure a Label Studio project for boxes, with its S3 storages
description:
  - Creates, updates or removes a Label Studio project identified by its title.
  - The label config is generated from a list of class names (boxes over one image) or given as XML.
  - Optionally attaches an S3 source storage (tasks from a bucket prefix, presigned URLs) and an S3
    target storage (annotations written back to S3), and syncs the source so new objects become tasks.
  - Talks to the REST API with the legacy token (C(LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true)).
version_added: 0.1.0
author:
  - ailab maintainers (@ailab)
extends_documentation_fragment:
  - ailab.platform.python_interpreter
  - ailab.platform.label_studio
options:
  title:
    description: Project title; it identifies the project (3 to 50 characters).
    type: str
    required: true
  state:
    description: Whether the project should exist. V(absent) deletes it with its tasks and annotations.
    type: str
    choices: [present, absent]
    default: present
  classes:
    description:
      - Class names for bounding boxes, in YOLO class order; a label config is generated from them.
      - Each label gets C(category="<index>") so Label Studio's own YOLO export keeps this order too.
      - Mutually exclusive with O(label_config); one of them is required with O(state=present).
    type: list
    elements: str
  label_config:
    description: A label config in Label Studio's XML, with one C(RectangleLabels) tag on an C(Image) tag.
    type: str
  allow_rotation:
    description:
      - Let annotators rotate boxes (only with O(classes)). YOLO boxes are axis-aligned, so an export
        turns a rotated box into the box that encloses it.
    type: bool
    default: false
  description:
    description: Project description.
    type: str
  source_storage:
    description: An S3 source storage; each object under O(source_storage.prefix) becomes a task.
    type: dict
    suboptions: &storage
      bucket:
        description: Bucket name.
        type: str
        required: true
      prefix:
        description: Key prefix (folder) in the bucket.
        type: str
        default: ""
      regex_filter:
        description: Only objects whose key matches this regular expression (source storage).
        type: str
      use_blob_urls:
        description: Treat every object as one image task (V(true)), rather than as JSON task files.
        type: bool
        default: true
      presign:
        description: Let the browser load images through presigned URLs rather than through Label Studio.
        type: bool
        default: true
      presign_ttl:
        description: Lifetime of presigned URLs in minutes.
        type: int
        default: 15
      recursive_scan:
        description: Include objects in sub-folders of the prefix.
        type: bool
        default: true
      can_delete_objects:
        description: Delete the S3 object when its annotation is deleted (target storage only).
        type: bool
        default: false
      endpoint_url:
        description: S3 endpoint URL as Label Studio reaches it (MinIO, Ceph); empty for AWS.
        type: str
      region:
        description: S3 region.
        type: str
      access_key:
        description: S3 access key id.
        type: str
      secret_key:
        description: S3 secret access key.
        type: str
      title:
        description: Storage title; identifies the storage within the project.
        type: str
  target_storage:
    description: An S3 target storage that receives the annotations (same options as O(source_storage)).
    type: dict
    suboptions: *storage
  sync:
    description:
      - Sync the source storage so that new objects become tasks.
      - Reports C(changed) only when tasks were added.
    type: bool
    default: true
  sync_timeout:
    description: Seconds to wait for a storage sync to finish.
    type: int
    default: 300
notes:
  - Label Studio never returns stored S3 credentials; a short one-way fingerprint of them is kept in
    the storage description so that changed credentials are detected and applied.
  - With an S3 endpoint on a private or loopback address, Label Studio must run with
    C(SSRF_PROTECTION_ENABLED=false), or it refuses the storage.
  - Supports check mode and reports what it would do in RV(actions).
"""

EXAMPLES = r"""
# Ad hoc or outside the lab inventories, name the Python that has the requirements:
#   ansible localhost -m ailab.platform.label_studio_project -a ... \
#     -e ansible_python_interpreter=.venv/bin/python
- name: Ensure the parts project with S3 images and annotations written back
  ailab.platform.label_studio_project:
    url: http://labelstudio.lab.local
    token: "{{ label_studio_token }}"
    title: Parts detection
    classes: [bolt, nut, washer]
    source_storage:
      bucket: datasets
      prefix: parts/raw
      endpoint_url: http://minio.lab.local:9000
      access_key: "{{ lab_s3_access_key }}"
      secret_key: "{{ lab_s3_secret_key }}"
    target_storage:
      bucket: datasets
      prefix: parts/annotations
      endpoint_url: http://minio.lab.local:9000
      access_key: "{{ lab_s3_access_key }}"
      secret_key: "{{ lab_s3_secret_key }}"
  register: parts_project

- name: Remove a project
  ailab.platform.label_studio_project:
    url: http://labelstudio.lab.local
    token: "{{ label_studio_token }}"
    title: Old experiment
    state: absent
"""

RETURN = r"""
project_id:
  description: Id of the project (null in check mode before it exists).
  returned: always
  type: int
  sample: 3
project_url:
  description: Address of the project in the Label Studio UI.
  returned: always
  type: str
  sample: http://labelstudio.lab.local/projects/3/
classes:
  description: Class names in the label config's order (the YOLO class order).
  returned: when state is present
  type: list
  elements: str
  sample: [bolt, nut, washer]
label_config:
  description: The label config applied.
  returned: when state is present
  type: str
source_storage_id:
  description: Id of the S3 source storage.
  returned: when state is present
  type: int
target_storage_id:
  description: Id of the S3 target storage.
  returned: when state is present
  type: int
tasks_added:
  description: Tasks the source storage sync created.
  returned: when state is present
  type: int
  sample: 10
actions:
  description: What was (or, in check mode, would be) done.
  returned: always
  type: list
  elements: str
  sample: [create project, create source storage, "sync source storage: 10 new tasks"]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ailab.platform.plugins.module_utils.label_config import LabelConfigError
from ansible_collections.ailab.platform.plugins.module_utils.label_studio import (
    CONNECTION_ARGSPEC,
    LabelStudioClient,
    LabelStudioError,
)
from ansible_collections.ailab.platform.plugins.module_utils.label_studio_project import ensure_project

STORAGE_SPEC = {
    "bucket": {"type": "str", "required": True},
    "prefix": {"type": "str", "default": ""},
    "regex_filter": {"type": "str"},
    "use_blob_urls": {"type": "bool", "default": True},
    "presign": {"type": "bool", "default": True},
    "presign_ttl": {"type": "int", "default": 15},
    "recursive_scan": {"type": "bool", "default": True},
    "can_delete_objects": {"type": "bool", "default": False},
    "endpoint_url": {"type": "str"},
    "region": {"type": "str"},
    "access_key": {"type": "str", "no_log": True},
    "secret_key": {"type": "str", "no_log": True},
    "title": {"type": "str"},
}


def main():
    argument_spec = dict(
        CONNECTION_ARGSPEC,
        title={"type": "str", "required": True},
        state={"type": "str", "choices": ["present", "absent"], "default": "present"},
        classes={"type": "list", "elements": "str"},
        label_config={"type": "str"},
        allow_rotation={"type": "bool", "default": False},
        description={"type": "str"},
        source_storage={"type": "dict", "options": STORAGE_SPEC},
        target_storage={"type": "dict", "options": STORAGE_SPEC},
        sync={"type": "bool", "default": True},
        sync_timeout={"type": "int", "default": 300},
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        mutually_exclusive=[("classes", "label_config")],
        required_if=[("state", "present", ("classes", "label_config"), True)],
        supports_check_mode=True,
    )
    params = module.params
    if not 3 <= len(params["title"]) <= 50:
        module.fail_json(
            msg="title must have 3 to 50 characters (Label Studio's limit), got %r" % params["title"]
        )
    try:
        client = LabelStudioClient(
            params["url"], params["token"], params["validate_certs"], params["timeout"]
        )
        result = ensure_project(client, params, module.check_mode)
    except (LabelStudioError, LabelConfigError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
