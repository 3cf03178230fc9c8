"""Filters of the GPU layer's controller side (role nvidia_device_plugin).

They turn what the role read (Node objects, the hosts' ``ailab_gpu`` facts, the smoke Jobs, their
pods, logs and events) into plain decisions, so the tasks stay short and the logic is unit-tested.
"""

from __future__ import annotations

import hashlib
import re

from ansible_collections.ailab.platform.plugins.filter.cluster import cluster_node_names

GPU_RESOURCE = "nvidia.com/gpu"
PRESENT_LABEL = "nvidia.com/gpu.present"
PRODUCT_LABEL = "nvidia.com/gpu.product"
MEMORY_LABEL = "nvidia.com/gpu.memory"
SMOKE_JOB_PREFIX = "nvidia-smoke-"
# Job names become the pods' job-name label: at most 63 characters.
_MAX_JOB_NAME = 63
# What nvidia-smi prints when it runs without the driver's libraries (no nvidia runtime).
_NVML_MISSING = re.compile(r"NVML|libnvidia-ml", re.IGNORECASE)


def _gpu_facts(variables):
    """Return the host's ``ailab_gpu`` facts (gathered by gpu_facts, or given as a host variable)."""
    facts = (variables.get("ansible_facts") or {}).get("ailab_gpu")
    if facts is None:
        facts = variables.get("ailab_gpu")
    return facts if isinstance(facts, dict) else None


def _capacity(node, field="capacity"):
    value = ((node.get("status") or {}).get(field) or {}).get(GPU_RESOURCE, 0)
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def gpu_capacity(nodes):
    """Return ``{node name: GPUs}`` for the nodes that report ``nvidia.com/gpu`` capacity.

    ``nodes`` is the ``resources`` list of ``kubernetes.core.k8s_info`` for kind Node. Roles that
    offer GPU workloads (the YOLO server, JupyterHub's GPU profiles) decide from it whether the
    cluster has GPUs the scheduler can hand out.
    """
    counts = {((n.get("metadata") or {}).get("name")): _capacity(n) for n in nodes or []}
    return {name: count for name, count in counts.items() if count > 0}


def smoke_job_name(node_name):
    """Return the smoke Job's name for a node, shortened with a hash to fit a label value."""
    name = SMOKE_JOB_PREFIX + node_name
    if len(name) <= _MAX_JOB_NAME:
        return name
    digest = hashlib.sha256(node_name.encode()).hexdigest()[:8]
    return f"{name[: _MAX_JOB_NAME - 9].rstrip('-.')}-{digest}"


def gpu_nodes(nodes, hosts, hostvars, forced_hosts=None):
    """Return the cluster's GPU nodes and the GPU hosts that are not nodes.

    A node is a GPU node when an inventory host behind it has ``ailab_gpu.present`` (the facts of
    ``ailab.platform.gpu_facts``), is in the ``gpu`` group (``forced_hosts``), or when the node
    reports ``nvidia.com/gpu`` capacity (a device plugin already counts its GPUs). ``nodes`` is
    the ``resources`` list of ``kubernetes.core.k8s_info`` for kind Node.

    Returns ``{"nodes": [...], "unregistered": [...]}``; each node is a dict with ``name``,
    ``host`` (null when found by capacity only), ``labels`` (the ``nvidia.com/gpu.*`` labels to
    set), ``gpu_name`` (what nvidia-smi prints, null when unknown), ``driver_version`` and
    ``smoke_job``. ``unregistered`` names each GPU host whose node the API does not hold.
    """
    by_name = {(n.get("metadata") or {}).get("name"): n for n in nodes or []}
    forced = set(forced_hosts or [])
    found = {}
    unregistered = []
    for host in hosts or []:
        variables = hostvars.get(host) or {}
        facts = _gpu_facts(variables) or {}
        if not (facts.get("present") or host in forced):
            continue
        (name,) = cluster_node_names([host], hostvars)
        if name not in by_name:
            unregistered.append(f"{host} (node {name})")
            continue
        gpus = facts.get("gpus") or []
        labels = {PRESENT_LABEL: "true"}
        if facts.get("product"):
            labels[PRODUCT_LABEL] = str(facts["product"])
        if facts.get("memory_mib"):
            labels[MEMORY_LABEL] = str(facts["memory_mib"])
        found[name] = {
            "name": name,
            "host": host,
            "labels": labels,
            "gpu_name": gpus[0].get("name") if gpus else None,
            "driver_version": (facts.get("driver") or {}).get("version"),
        }
    for name, node in by_name.items():
        if name not in found and _capacity(node) > 0:
            found[name] = {
                "name": name,
                "host": None,
                "labels": {PRESENT_LABEL: "true"},
                "gpu_name": None,
                "driver_version": None,
            }
    result = []
    for name in sorted(found):
        entry = found[name]
        entry["smoke_job"] = smoke_job_name(name)
        result.append(entry)
    return {"nodes": result, "unregistered": unregistered}


def gpu_label_patch(node, wanted, record_key):
    """Return the ``metadata`` merge patch that gives ``node`` the ``wanted`` labels.

    The keys this role added or changed are recorded in the annotation ``record_key``, so removal
    deletes exactly those and leaves labels that were there before (k3s node labels) alone.
    ``wanted`` empty (removal) deletes every recorded label and the annotation. A label set to
    null in a merge patch is deleted.
    """
    metadata = node.get("metadata") or {}
    current = metadata.get("labels") or {}
    recorded = [k for k in ((metadata.get("annotations") or {}).get(record_key) or "").split(",") if k]
    wanted = dict(wanted or {})
    labels = dict(wanted)
    for key in recorded:
        if key not in wanted:
            labels[key] = None
    keep = sorted(
        {k for k in recorded if k in wanted} | {k for k, v in wanted.items() if current.get(k) != v}
    )
    return {
        "labels": labels,
        "annotations": {record_key: ",".join(keep) if keep else None},
    }


def _pod_exit_code(pod):
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated:
            return terminated.get("exitCode")
    return None


def _job_condition(job):
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            return condition["type"]
    return None


def _indent(text, prefix="    "):
    lines = str(text).rstrip().splitlines() or ["(empty)"]
    return "\n".join(prefix + line for line in lines)


def smoke_plan(wanted, existing, settings_key):
    """Decide which smoke Jobs to (re)create: ``{"run": [Job], "delete": [name], "passed": [name]}``.

    ``wanted`` are the Job definitions for the GPU nodes, ``existing`` the smoke Jobs the API holds.
    A Job that succeeded with the same settings (annotation ``settings_key``) is kept and not run
    again; one that failed, is unfinished, has other settings or belongs to a node that is no
    longer a GPU node is deleted (and re-created when wanted).
    """
    by_name = {(j.get("metadata") or {}).get("name"): j for j in existing or []}
    plan = {"run": [], "delete": [], "passed": []}
    for job in wanted or []:
        name = job["metadata"]["name"]
        old = by_name.pop(name, None)
        if old is not None:
            same = (old["metadata"].get("annotations") or {}).get(settings_key) == job["metadata"][
                "annotations"
            ].get(settings_key)
            if same and _job_condition(old) == "Complete":
                plan["passed"].append(name)
                continue
            plan["delete"].append(name)
        plan["run"].append(job)
    plan["delete"] += sorted(by_name)
    return plan


def unfinished_jobs(jobs, names):
    """Return the names among ``names`` whose Job is missing or has neither Complete nor Failed."""
    finished = {(j.get("metadata") or {}).get("name") for j in jobs or [] if _job_condition(j)}
    return [n for n in names or [] if n not in finished]


def gpu_smoke_verdicts(gpu_nodes, observed):
    """Judge each GPU node's smoke Job; return a list of ``{"node", "ok", "cause", "report"}``.

    ``observed`` holds what the role read: ``jobs``, ``pods``, ``events`` and ``nodes`` (the
    ``resources`` of ``k8s_info`` for the smoke Jobs, their pods, the namespace's events, the
    Nodes), ``logs`` (pod name -> log text), ``requested`` (GPUs per Job) and ``passed`` (Jobs
    kept from an earlier successful run, not run again).
    """
    jobs_by_name = {(j.get("metadata") or {}).get("name"): j for j in observed.get("jobs") or []}
    nodes_by_name = {(n.get("metadata") or {}).get("name"): n for n in observed.get("nodes") or []}
    verdicts = []
    for gpu_node in gpu_nodes or []:
        job_name = gpu_node["smoke_job"]
        if job_name in (observed.get("passed") or []):
            report = f"{gpu_node['name']}: Job {job_name} passed earlier with the same settings"
            verdicts.append({"node": gpu_node["name"], "ok": True, "cause": None, "report": report})
            continue
        job_pods = [
            p
            for p in observed.get("pods") or []
            if ((p.get("metadata") or {}).get("labels") or {}).get("job-name") == job_name
        ]
        node = nodes_by_name.get(gpu_node["name"])
        verdicts.append(_verdict(gpu_node, jobs_by_name.get(job_name), job_pods, node, observed))
    return verdicts


def _verdict(gpu_node, job, pods, node, observed):
    """Judge one GPU node's smoke Job: the likely cause of a failure, and a report with the
    pod's phase, events and log."""
    requested = observed.get("requested", 1)
    logs = observed.get("logs") or {}
    events = observed.get("events") or []
    namespace = observed.get("namespace") or "nvidia-device-plugin"
    name = gpu_node["name"]
    pods = sorted(pods or [], key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")
    pod = pods[-1] if pods else None
    pod_name = (pod or {}).get("metadata", {}).get("name")
    phase = (pod or {}).get("status", {}).get("phase")
    log = (logs or {}).get(pod_name) or ""
    # By UID: a re-created Job has the name of the one before, and its old events.
    uids = [(obj or {}).get("metadata", {}).get("uid") for obj in (pod, job)]
    involved = {uid for uid in uids if uid}
    event_lines = [
        f"{e.get('type', '')} {e.get('reason', '')}: {e.get('message', '')}".strip()
        for e in sorted(events or [], key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        if (e.get("involvedObject") or {}).get("uid") in involved
    ]
    allocatable = _capacity(node or {}, "allocatable")
    condition = _job_condition(job or {})
    cause = None
    if job is None:
        cause = f"the smoke Job {gpu_node['smoke_job']} does not exist (it was deleted while the role waited)"
    elif pod is None:
        cause = "the Job created no pod: see the Job's events"
    elif _NVML_MISSING.search(log):
        cause = (
            "nvidia-smi could not load NVML: the container ran without the NVIDIA runtime. Check that "
            f"RuntimeClass nvidia (handler nvidia) exists and that containerd on {name} has the nvidia "
            "runtime (nvidia-container-toolkit installed, then k3s restarted: run playbooks/gpu.yml)"
        )
    elif phase == "Pending":
        if allocatable == 0:
            cause = (
                f"Pending: node {name} has 0 allocatable {GPU_RESOURCE}: the device plugin is not running "
                f"on that node (is it labelled {PRESENT_LABEL}=true? kubectl -n {namespace} get pods "
                "-o wide -l app.kubernetes.io/name=nvidia-device-plugin)"
            )
        else:
            cause = (
                f"Pending/Unschedulable: no free GPU on {name}: the Job asks for {requested} {GPU_RESOURCE}, "
                f"the node has {allocatable} allocatable and other pods may hold them "
                f"(kubectl describe node {name})"
            )
    elif phase == "Failed" or condition == "Failed":
        cause = f"nvidia-smi failed (exit code {_pod_exit_code(pod)}): see its log"
    elif phase != "Succeeded":
        cause = f"the pod is {phase} and did not finish in time"
    elif "NVIDIA-SMI" not in log:
        cause = "the pod succeeded but its log is not nvidia-smi output"
    elif gpu_node.get("gpu_name") and gpu_node["gpu_name"] not in log:
        cause = (
            f"nvidia-smi does not list {gpu_node['gpu_name']}, the GPU gpu_facts found on "
            f"{gpu_node.get('host') or name}"
        )
    report = [
        f"{name}: " + ("nvidia-smi ran and saw the GPU" if cause is None else f"FAILED: {cause}"),
        f"  Job {gpu_node['smoke_job']}, pod {pod_name or '-'} ({phase or 'no pod'}), "
        f"{allocatable} allocatable {GPU_RESOURCE} on the node",
    ]
    if cause is not None:
        report += [
            "  events:",
            _indent("\n".join(event_lines) or "(none)"),
            "  log:",
            _indent(log or "(none)"),
        ]
    return {"node": name, "ok": cause is None, "cause": cause, "report": "\n".join(report)}


class FilterModule:
    """The GPU layer's filters."""

    def filters(self):
        return {
            "gpu_nodes": gpu_nodes,
            "gpu_capacity": gpu_capacity,
            "gpu_label_patch": gpu_label_patch,
            "gpu_smoke_plan": smoke_plan,
            "gpu_unfinished_jobs": unfinished_jobs,
            "gpu_smoke_verdicts": gpu_smoke_verdicts,
        }
