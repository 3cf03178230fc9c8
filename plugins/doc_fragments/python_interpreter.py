# Copyright: ailab maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    # Every module of the collection runs with the Python Ansible picks on the target host.
    # No options of its own: the notes are what the modules share.
    DOCUMENTATION = r"""
options: {}
notes:
  - The module runs with the Python that Ansible uses on the target host, which needs the module's
    requirements. The lab inventories pin it for the controller
    (C(ansible_python_interpreter="{{ ansible_playbook_python }}")). In ad-hoc use or another
    inventory, set C(ansible_python_interpreter) yourself, for example
    C(ansible localhost -m ailab.platform.service_ready -a url=http://127.0.0.1:8080/health
    -e ansible_python_interpreter=.venv/bin/python); otherwise interpreter discovery may pick any
    Python found on PATH (a pyenv shim, the system Python) that lacks them.
"""
