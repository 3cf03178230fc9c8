#!/usr/bin/python
# Copyright: ailab maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: service_ready
short_description: Wait until an HTTP endpoint answers the expected status
description:
  - Polls O(url) until it answers one of O(status) (and, optionally, a body containing O(body_contains)),
    for at most O(timeout) seconds. Redirects are not followed, so a 3xx can be expected too.
  - Fails with the URL, the time waited and the last error (connection refused, HTTP 503, ...).
  - Never changes anything; runs in check mode too.
version_added: 0.1.0
author:
  - ailab maintainers (@ailab)
extends_documentation_fragment:
  - ailab.platform.python_interpreter
options:
  url:
    description: The endpoint, for example C(http://mlflow.lab.local/health).
    type: str
    required: true
  status:
    description: HTTP statuses that count as ready.
    type: list
    elements: int
    default: [200]
  method:
    description: HTTP method.
    type: str
    default: GET
  headers:
    description: Request headers (hidden from logs, as they often carry tokens).
    type: dict
  body_contains:
    description: A string the answer's body must contain.
    type: str
  timeout:
    description: Seconds to keep trying in all.
    type: int
    default: 300
  interval:
    description: Seconds between attempts.
    type: float
    default: 2
  request_timeout:
    description: Seconds to wait for one answer.
    type: int
    default: 10
  validate_certs:
    description: Verify TLS certificates.
    type: bool
    default: true
notes:
  - Supports check mode.
"""

EXAMPLES = r"""
# Ad hoc or outside the lab inventories, name the Python that has the requirements:
#   ansible localhost -m ailab.platform.service_ready -a ... \
#     -e ansible_python_interpreter=.venv/bin/python
- name: Wait for Label Studio to be ready
  ailab.platform.service_ready:
    url: http://labelstudio.lab.local/health
    body_contains: UP
    timeout: 600

- name: Wait for the API to ask for a login
  ailab.platform.service_ready:
    url: http://jupyterhub.lab.local/hub/api/users
    status: [401, 403]
"""

RETURN = r"""
status:
  description: The status the endpoint answered.
  returned: success
  type: int
  sample: 200
elapsed:
  description: Seconds waited.
  returned: success
  type: float
  sample: 26.4
attempts:
  description: Requests made.
  returned: success
  type: int
  sample: 14
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ailab.platform.plugins.module_utils.http_wait import NotReadyError, wait_for_status


def main():
    module = AnsibleModule(
        argument_spec={
            "url": {"type": "str", "required": True},
            "status": {"type": "list", "elements": "int", "default": [200]},
            "method": {"type": "str", "default": "GET"},
            "headers": {"type": "dict", "no_log": True},
            "body_contains": {"type": "str"},
            "timeout": {"type": "int", "default": 300},
            "interval": {"type": "float", "default": 2},
            "request_timeout": {"type": "int", "default": 10},
            "validate_certs": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    params = module.params
    if not params["url"].startswith(("http://", "https://")):
        module.fail_json(msg="url must start with http:// or https://, got %r" % params["url"])
    if params["timeout"] < 1 or params["interval"] <= 0:
        module.fail_json(msg="timeout must be at least 1 and interval above 0")
    try:
        result = wait_for_status(
            params["url"],
            statuses=tuple(params["status"]),
            timeout=params["timeout"],
            interval=params["interval"],
            method=params["method"].upper(),
            headers=params["headers"],
            validate_certs=params["validate_certs"],
            request_timeout=params["request_timeout"],
            body_contains=params["body_contains"],
        )
    except NotReadyError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
