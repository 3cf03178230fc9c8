"""Every task whose arguments carry a secret (token, password, key) is ``no_log``.

A static audit of roles/*/tasks and playbooks/: at ``-v`` Ansible prints each task's arguments and
result, so a task that templates a secret variable into them must set ``no_log``. The values step of
yolo_server is also run at ``-vvv`` in tests/integration/charts/test_yolo_server_chart.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
# Variables that hold a secret value (not its file name, lifetime or the name of a Secret object).
SECRET_VARIABLE = re.compile(
    r"\b\w*(token|password|secret_key|access_key|api_key)\b(?!_(file|ttl|dir|enabled))", re.IGNORECASE
)
SECRET_LOOKUP = re.compile(r"lookup\(\s*'ansible\.builtin\.(password|file)'")
TEMPLATE_LOOKUP = re.compile(r"lookup\(\s*'ansible\.builtin\.template',\s*'([^']+)'")
INCLUDES = ("ansible.builtin.import_", "ansible.builtin.include_")
# Task keys that are not printed with the task's arguments or result.
NOT_LOGGED = {"name", "when", "no_log", "tags", "notify", "listen", "changed_when", "failed_when", "until"}
BLOCK_KEYS = ("block", "rescue", "always")
# Messages: their literal text is written in the source (it may name a variable such as
# postgresql_databases[].password); only what they template can carry a secret.
MESSAGE_KEYS = ("msg", "fail_msg", "success_msg")
JINJA_EXPRESSION = re.compile(r"{{.*?}}", re.DOTALL)


def _templated_part_of_messages(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: " ".join(JINJA_EXPRESSION.findall(item))
            if key in MESSAGE_KEYS and isinstance(item, str)
            else _templated_part_of_messages(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_templated_part_of_messages(item) for item in value]
    return value


def _tasks(
    items: list[dict[str, Any]], inherited_no_log: bool = False
) -> Iterator[tuple[dict[str, Any], bool]]:
    for item in items or []:
        no_log = bool(item.get("no_log", inherited_no_log))
        if any(key in item for key in BLOCK_KEYS):
            for key in BLOCK_KEYS:
                yield from _tasks(item.get(key, []), no_log)
        else:
            yield item, no_log


def _task_files() -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    for path in sorted(REPO.glob("roles/*/tasks/*.yml")) + sorted(REPO.glob("roles/*/handlers/*.yml")):
        yield path, yaml.safe_load(path.read_text()) or []
    for path in sorted(REPO.glob("playbooks/*.yml")):
        for play in yaml.safe_load(path.read_text()) or []:
            for key in ("pre_tasks", "tasks", "post_tasks", "handlers"):
                yield path, play.get(key, [])


def _shows_a_secret(path: Path, task: dict[str, Any]) -> bool:
    if any(key.startswith(INCLUDES) for key in task):
        return False  # prints the file name only; the included tasks are audited themselves
    shown = yaml.safe_dump(
        _templated_part_of_messages({k: v for k, v in task.items() if k not in NOT_LOGGED})
    )
    # A template looked up into a fact: its text is what the fact holds.
    for template in TEMPLATE_LOOKUP.findall(shown):
        shown += (path.parent.parent / "templates" / template).read_text()
    return bool(SECRET_VARIABLE.search(shown) or SECRET_LOOKUP.search(shown))


def test_every_task_that_shows_a_secret_is_no_log() -> None:
    leaks = [
        f"{path.relative_to(REPO)}: {task.get('name', task)}"
        for path, tasks in _task_files()
        for task, no_log in _tasks(tasks)
        if _shows_a_secret(path, task) and not no_log
    ]
    assert not leaks, "tasks that print a secret at -v (add no_log): " + "; ".join(leaks)


def test_the_audit_sees_the_secrets_of_the_values_step() -> None:
    # The values step templates the keys through values.yml.j2: the audit must look into it.
    path = REPO / "roles/yolo_server/tasks/values.yml"
    (task,) = yaml.safe_load(path.read_text())
    assert _shows_a_secret(path, task)


def test_a_message_that_templates_a_secret_is_seen() -> None:
    shows = {"ansible.builtin.fail": {"msg": "the password is {{ lab_admin_password }}"}}
    names = {"ansible.builtin.fail": {"msg": "give postgresql_databases[].password for {{ item }}"}}
    assert _shows_a_secret(REPO / "roles/x/tasks/main.yml", shows)
    assert not _shows_a_secret(REPO / "roles/x/tasks/main.yml", names)
