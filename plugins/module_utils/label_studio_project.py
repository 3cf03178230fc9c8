# Copyright: ailab maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ensure a Label Studio project, its S3 storages and their sync, or remove the project."""

from __future__ import annotations

from ansible_collections.ailab.platform.plugins.module_utils.label_config import (
    box_label_config,
    parse_box_config,
)
from ansible_collections.ailab.platform.plugins.module_utils.label_studio import (
    LabelStudioError,
    ensure_storage,
    sync_storage,
)


def wanted_label_config(classes: list[str] | None, label_config: str | None, allow_rotation: bool) -> str:
    """The label config to apply: generated from class names, or the given XML (checked)."""
    if classes:
        config = box_label_config(classes, allow_rotation=allow_rotation)
    else:
        config = (label_config or "").strip()
    # Parse it either way: a config that names no boxes would make an export impossible later.
    parse_box_config(config)
    return config


def ensure_project(client, params: dict, check_mode: bool) -> dict:
    """Create, update or delete the project described by the module parameters.

    Returns the module result: ``changed``, ``project_id``, ``project_url``, ``classes``,
    ``label_config``, ``source_storage_id``, ``target_storage_id``, ``tasks_added``, ``actions``.
    """
    title = params["title"]
    # The title is the project's identity here (ids differ between labs).
    matches = [p for p in client.list_projects() if p.get("title") == title]
    if len(matches) > 1:
        raise LabelStudioError(
            "Label Studio at %s has %d projects titled %r: remove the duplicates"
            % (client.url, len(matches), title)
        )
    project = matches[0] if matches else None
    result = {"changed": False, "actions": [], "project_id": None, "project_url": None}

    if params["state"] == "absent":
        if project is not None:
            result["changed"] = True
            result["actions"].append("delete project %d" % project["id"])
            result["project_id"] = project["id"]
            if not check_mode:
                client.request("DELETE", "/api/projects/%d/" % project["id"], what="project %r" % title)
        return result

    config = wanted_label_config(params.get("classes"), params.get("label_config"), params["allow_rotation"])
    body = {"title": title, "label_config": config}
    if params.get("description") is not None:
        body["description"] = params["description"]
    if project is None:
        result["changed"] = True
        result["actions"].append("create project")
        if check_mode:
            project = {"id": None}
        else:
            project = client.request("POST", "/api/projects", body, what="project %r" % title)
    else:
        updates = {k: v for k, v in body.items() if project.get(k) != v}
        if updates:
            result["changed"] = True
            result["actions"].append("update project fields %s" % ", ".join(sorted(updates)))
            if not check_mode:
                project = client.request(
                    "PATCH",
                    "/api/projects/%d/" % project["id"],
                    updates,
                    what="the update of project %r" % title,
                )

    project_id = project["id"]
    result.update(
        project_id=project_id,
        project_url=client.project_url(project_id) if project_id else None,
        label_config=config,
        classes=parse_box_config(config)["classes"],
        source_storage_id=None,
        target_storage_id=None,
        tasks_added=0,
    )

    for kind, option in (("source", "source_storage"), ("target", "target_storage")):
        spec = params.get(option)
        if not spec:
            continue
        if project_id is None:  # check mode, project not created yet
            result["actions"].append("create %s storage" % kind)
            continue
        storage = ensure_storage(client, project_id, spec, kind, check_mode)
        result["%s_storage_id" % kind] = storage["id"]
        if storage["changed"]:
            result["changed"] = True
            verb = "create" if storage["created"] else "update (%s)" % ", ".join(storage["fields"])
            result["actions"].append("%s %s storage" % (verb, kind))
        # A sync of the source imports new objects as tasks; a target sync exports the existing
        # annotations once, after which Label Studio writes each saved annotation itself.
        wants_sync = params["sync"] if kind == "source" else storage["created"]
        if wants_sync and storage["id"] is not None and not check_mode:
            before = client.request("GET", "/api/projects/%d" % project_id, what="project %r" % title)
            sync_storage(client, storage["id"], kind, wait_s=params.get("sync_timeout", 300))
            after = client.request("GET", "/api/projects/%d" % project_id, what="project %r" % title)
            added = (after.get("task_number") or 0) - (before.get("task_number") or 0)
            if kind == "source" and added > 0:
                result["tasks_added"] = added
                result["changed"] = True
                result["actions"].append("sync source storage: %d new tasks" % added)
    return result
