#!/usr/bin/python
# Copyright: ailab maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: mlflow_model
short_description: Register MLflow model versions, move aliases, set tags, delete versions
description:
  - Registers a version of a registered model from an artifact URI (for example C(runs:/<run_id>/weights)),
    or uploads a local weights file (C(.pt)) as a new run and registers that.
  - Idempotent on (name, source), and on (name, file content) for uploads; sets or moves an alias
    (for example C(champion)) and version tags only when they differ.
  - V(state=absent) deletes the version chosen by O(version), O(source) or O(model_file).
version_added: 0.1.0
author:
  - ailab maintainers (@ailab)
extends_documentation_fragment:
  - ailab.platform.python_interpreter
options:
  tracking_uri:
    description: MLflow tracking server URL, for example C(http://mlflow.lab.local).
    type: str
    required: true
  name:
    description: Registered model name; created when missing.
    type: str
    required: true
  source:
    description: Artifact URI to register (C(runs:/...), C(s3://...), C(mlflow-artifacts:/...)).
    type: str
  run_id:
    description: Run that produced O(source); read from a C(runs:/) source when not given.
    type: str
  model_file:
    description:
      - Local file on the host that runs the module, uploaded as an artifact of a new run in O(experiment).
    type: path
  experiment:
    description: Experiment of the runs that O(model_file) uploads create.
    type: str
    default: ailab-models
  artifact_path:
    description: Artifact folder of the uploaded file in its run.
    type: str
    default: model
  version:
    description: An existing version to act on (set O(alias) or O(tags), or delete).
    type: str
  alias:
    description: Alias to point at the version, moved from any other version.
    type: str
  tags:
    description: Tags to set on the version (values become strings).
    type: dict
  description:
    description: Description of a newly registered version.
    type: str
  state:
    description: V(present) registers or updates; V(absent) deletes the version.
    type: str
    choices: [present, absent]
    default: present
  timeout:
    description: Seconds to wait for each HTTP answer.
    type: int
    default: 60
  validate_certs:
    description: Verify the TLS certificate of O(tracking_uri).
    type: bool
    default: true
  username:
    description:
      - User of a tracking server with basic auth, such as the lab's MLflow (its admin is
        C(lab_admin_user)). Defaults to the environment variable E(MLFLOW_TRACKING_USERNAME).
    type: str
  password:
    description:
      - Password of O(username); the lab's admin password is in
        C(<lab_credentials_dir>/mlflow-admin-password). Defaults to E(MLFLOW_TRACKING_PASSWORD).
    type: str
  s3:
    description:
      - S3 settings for a server that does not proxy artifacts (the client then writes to S3 itself).
        Not needed with C(--serve-artifacts), the lab's default.
    type: dict
    suboptions:
      endpoint_url:
        description: Becomes C(MLFLOW_S3_ENDPOINT_URL).
        type: str
      access_key:
        description: Becomes C(AWS_ACCESS_KEY_ID).
        type: str
      secret_key:
        description: Becomes C(AWS_SECRET_ACCESS_KEY).
        type: str
      region:
        description: Becomes C(AWS_DEFAULT_REGION).
        type: str
        default: us-east-1
requirements:
  - None with a tracking server that proxies artifacts (C(--serve-artifacts), the lab's setup); the
    module talks to the REST API. To upload O(model_file) to a server that does not, mlflow-skinny
    (or mlflow) on the host that runs the module.
notes:
  - Supports check mode.
"""

EXAMPLES = r"""
# Ad hoc or outside the lab inventories, name the Python that has the requirements:
#   ansible localhost -m ailab.platform.mlflow_model -a ... \
#     -e ansible_python_interpreter=.venv/bin/python
- name: Register trained weights and make them the champion
  ailab.platform.mlflow_model:
    tracking_uri: http://mlflow.lab.local
    name: parts-detector
    model_file: /srv/runs/parts/weights/best.pt
    alias: champion
    tags:
      dataset: parts-2026-11
  register: champion

- name: Register a training run's weights without moving the champion
  ailab.platform.mlflow_model:
    tracking_uri: http://mlflow.lab.local
    name: parts-detector
    source: "runs:/{{ train_run_id }}/weights"
    alias: challenger

- name: Roll the champion back to version 3
  ailab.platform.mlflow_model:
    tracking_uri: http://mlflow.lab.local
    name: parts-detector
    version: "3"
    alias: champion

- name: Delete version 1
  ailab.platform.mlflow_model:
    tracking_uri: http://mlflow.lab.local
    name: parts-detector
    version: "1"
    state: absent
"""

RETURN = r"""
name:
  description: Registered model name.
  returned: always
  type: str
version:
  description: The version registered, found or deleted (null when there was none).
  returned: always
  type: str
  sample: "4"
source:
  description: Source of the version as MLflow stores it.
  returned: always
  type: str
run_id:
  description: Run of the version.
  returned: always
  type: str
model_uri:
  description: URI to load the model (C(models:/name@alias) or C(models:/name/version)).
  returned: when state is present
  type: str
  sample: models:/parts-detector@champion
previous_alias_version:
  description: Version the alias pointed at before (null when it was unset).
  returned: when alias is given
  type: str
tags:
  description: Tags of the version after the change.
  returned: when state is present
  type: dict
actions:
  description: What was (or, in check mode, would be) done.
  returned: always
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule, env_fallback
from ansible_collections.ailab.platform.plugins.module_utils.mlflow_registry import (
    RegistryError,
    check_server,
    ensure_model_version,
    make_client,
)


def main():
    module = AnsibleModule(
        argument_spec={
            "tracking_uri": {"type": "str", "required": True},
            "name": {"type": "str", "required": True},
            "source": {"type": "str"},
            "run_id": {"type": "str"},
            "model_file": {"type": "path"},
            "experiment": {"type": "str", "default": "ailab-models"},
            "artifact_path": {"type": "str", "default": "model"},
            "version": {"type": "str"},
            "alias": {"type": "str"},
            "tags": {"type": "dict"},
            "description": {"type": "str"},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "timeout": {"type": "int", "default": 60},
            "validate_certs": {"type": "bool", "default": True},
            "username": {"type": "str", "fallback": (env_fallback, ["MLFLOW_TRACKING_USERNAME"])},
            "password": {
                "type": "str",
                "no_log": True,
                "fallback": (env_fallback, ["MLFLOW_TRACKING_PASSWORD"]),
            },
            "s3": {
                "type": "dict",
                "options": {
                    "endpoint_url": {"type": "str"},
                    "access_key": {"type": "str", "no_log": True},
                    "secret_key": {"type": "str", "no_log": True},
                    "region": {"type": "str", "default": "us-east-1"},
                },
            },
        },
        mutually_exclusive=[("source", "model_file")],
        required_together=[("username", "password")],
        required_one_of=[("source", "model_file", "version")],
        supports_check_mode=True,
    )
    params = module.params
    s3 = params["s3"] or {}
    for option, variable in (
        ("endpoint_url", "MLFLOW_S3_ENDPOINT_URL"),
        ("access_key", "AWS_ACCESS_KEY_ID"),
        ("secret_key", "AWS_SECRET_ACCESS_KEY"),
        ("region", "AWS_DEFAULT_REGION"),
    ):
        if s3.get(option):
            os.environ[variable] = s3[option]
    try:
        check_server(params["tracking_uri"], params["timeout"], params["validate_certs"])
        client = make_client(
            params["tracking_uri"],
            params["timeout"],
            params["validate_certs"],
            params["username"],
            params["password"],
        )
        result = ensure_model_version(client, params, module.check_mode)
    except RegistryError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
