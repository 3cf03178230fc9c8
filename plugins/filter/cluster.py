"""Pure data shaping for the cluster layer: k3s config, API URLs, kubeconfigs, node readiness.

Each filter takes plain values and returns plain values so that the roles stay declarative and
the logic is unit-tested (tests/unit/plugins/filter/test_cluster.py).
"""

from __future__ import annotations

import copy
import ipaddress
import re
from urllib.parse import urlsplit, urlunsplit

import yaml
from ansible.errors import AnsibleFilterError

TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0")
# k3s joins node-label/node-taint/tls-san/disable values given as lists; a user's list is added
# to the defaults so that, e.g., disabling traefik keeps servicelb disabled for MetalLB.
_TAINT_RE = re.compile(r"^(?P<key>[^=:\s]+)(=(?P<value>[^:\s]*))?:(?P<effect>\w+)$")


def _plain(value):
    """Return ``value`` as built-in dicts, lists and scalars (Ansible may hand in str subclasses)."""
    if isinstance(value, dict):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def _merge(base, override):
    """Merge ``override`` into ``base``: dicts recurse, lists add unseen items, None removes."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merge(result[key], value)
        elif isinstance(value, list) and isinstance(result.get(key), list):
            merged = list(result[key])
            merged.extend(item for item in value if item not in merged)
            result[key] = merged
        else:
            result[key] = copy.deepcopy(value)
    return result


def _taint_text(taint):
    """Return ``key[=value]:Effect`` from a string or a {key, value, effect} dict, validated."""
    if isinstance(taint, dict):
        unknown = set(taint) - {"key", "value", "effect"}
        if unknown or "key" not in taint or "effect" not in taint:
            raise AnsibleFilterError(
                f"k3s_node_taints: {taint!r} must have 'key', 'effect' and optionally 'value'"
            )
        value = taint.get("value")
        text = (
            f"{taint['key']}={value}:{taint['effect']}"
            if value not in (None, "")
            else (f"{taint['key']}:{taint['effect']}")
        )
    else:
        text = str(taint)
    match = _TAINT_RE.match(text)
    if not match:
        raise AnsibleFilterError(f"k3s_node_taints: {text!r} is not key[=value]:Effect")
    if match.group("effect") not in TAINT_EFFECTS:
        raise AnsibleFilterError(
            f"k3s_node_taints: effect {match.group('effect')!r} of {text!r} must be one of "
            + ", ".join(TAINT_EFFECTS)
        )
    return text


def k3s_config(defaults, overrides=None, node_labels=None, node_taints=None):
    """Build the content of /etc/rancher/k3s/config.yaml.

    ``overrides`` (the user's ``k3s_server_config``/``k3s_agent_config``) is merged over
    ``defaults``: nested dicts merge, lists gain the user's extra items, and a key set to null
    (None) is removed. ``node_labels`` (a dict) and ``node_taints`` (strings or dicts) become
    ``node-label``/``node-taint`` entries. Keys come back sorted so the rendered file is stable.
    """
    if not isinstance(defaults, dict):
        raise AnsibleFilterError(f"k3s_config: defaults must be a dict, got {type(defaults).__name__}")
    if overrides is None:
        overrides = {}
    if not isinstance(overrides, dict):
        raise AnsibleFilterError(
            f"k3s_config: the user's config must be a dict of k3s options, got {type(overrides).__name__}"
        )
    extra = {}
    if node_labels:
        if not isinstance(node_labels, dict):
            raise AnsibleFilterError("k3s_node_labels must be a dict of label: value")
        extra["node-label"] = [f"{key}={value}" for key, value in sorted(node_labels.items())]
    if node_taints:
        if not isinstance(node_taints, list):
            raise AnsibleFilterError("k3s_node_taints must be a list")
        extra["node-taint"] = [_taint_text(taint) for taint in node_taints]
    merged = _merge(_merge(_plain(defaults), extra), _plain(overrides))
    return dict(sorted(merged.items()))


def api_url(address, port=6443, scheme="https"):
    """Return ``https://address:port``, with brackets around an IPv6 address."""
    text = str(address).strip()
    if not text:
        raise AnsibleFilterError("api_url: the address is empty")
    host = text.strip("[]")
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"{scheme}://{host}:{int(port)}"


def kubeconfig_server(kubeconfig, address, name=None):
    """Point a kubeconfig at ``address`` instead of the loopback address k3s/microk8s write.

    ``kubeconfig`` is the YAML text (or parsed dict). Every cluster whose server host is a
    loopback address gets ``address`` (port and scheme kept); other servers are left alone.
    With ``name``, the cluster, user and context (k3s calls them all ``default``) are renamed to
    it so that the file merges with other kubeconfigs; a kubeconfig with one of each is assumed.
    Returns YAML text.
    """
    config = yaml.safe_load(str(kubeconfig)) if isinstance(kubeconfig, str) else _plain(kubeconfig)
    if not isinstance(config, dict) or not config.get("clusters"):
        raise AnsibleFilterError("kubeconfig_server: the input is not a kubeconfig (no clusters)")
    target = str(address).strip().strip("[]")
    if not target:
        raise AnsibleFilterError("kubeconfig_server: the address is empty")
    try:
        bracketed = f"[{target}]" if ipaddress.ip_address(target).version == 6 else target
    except ValueError:
        bracketed = target
    for entry in config["clusters"]:
        cluster = entry.get("cluster") or {}
        server = cluster.get("server")
        if not server:
            continue
        parts = urlsplit(server)
        if parts.hostname in LOOPBACK_HOSTS:
            netloc = bracketed if parts.port is None else f"{bracketed}:{parts.port}"
            cluster["server"] = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    if name:
        for section in ("clusters", "users", "contexts"):
            for entry in config.get(section) or []:
                entry["name"] = name
        for entry in config.get("contexts") or []:
            context = entry.get("context") or {}
            if context.get("cluster") is not None:
                context["cluster"] = name
            if context.get("user") is not None:
                context["user"] = name
        if config.get("current-context"):
            config["current-context"] = name
    return yaml.safe_dump(_plain(config), default_flow_style=False, sort_keys=False)


def cluster_node_names(hosts, hostvars):
    """Return the Kubernetes node name of each inventory host, in inventory order.

    The name k3s registers: ``node-name`` (``k3s_node_name``, else ``node-name`` in the host's
    ``k3s_server_config``/``k3s_agent_config``); else the machine's host name as the kernel
    reports it (``ansible_facts.nodename``, a full name such as ``gpu1.lab.example`` when the
    host is named so), lower-cased like k3s and the kubelet do; else the inventory name (a host
    whose facts were not gathered, e.g. outside ``--limit``).
    """
    names = []
    for host in hosts or []:
        variables = hostvars.get(host) or {}
        name = variables.get("k3s_node_name")
        for config in ("k3s_server_config", "k3s_agent_config"):
            if not name and isinstance(variables.get(config), dict):
                name = variables[config].get("node-name")
        if not name:
            facts = variables.get("ansible_facts") or {}
            hostname = facts.get("nodename") or variables.get("ansible_nodename")
            name = str(hostname).lower() if hostname else None
        names.append(str(name or host))
    return names


def _taint_dict(taint):
    """Return a taint as the API's {key, value, effect} (value left out when empty)."""
    match = _TAINT_RE.match(_taint_text(taint))
    result = {"key": match.group("key"), "effect": match.group("effect")}
    if match.group("value"):
        result["value"] = match.group("value")
    return result


def cluster_node_settings(hosts, hostvars):
    """Return ``[{name, labels, taints}]``: what the inventory wants on each host's Node object.

    ``name`` as ``cluster_node_names`` finds it; ``labels`` from ``k3s_node_labels`` (values as
    strings); ``taints`` from ``k3s_node_taints`` as API dicts. k3s applies these at registration
    only; the cluster_nodes role applies them through the API so that later changes reach the node.
    """
    settings = []
    for host, name in zip(hosts or [], cluster_node_names(hosts, hostvars), strict=True):
        variables = hostvars.get(host) or {}
        labels = variables.get("k3s_node_labels") or {}
        taints = variables.get("k3s_node_taints") or []
        if not isinstance(labels, dict):
            raise AnsibleFilterError(f"{host}: k3s_node_labels must be a dict of label: value")
        if not isinstance(taints, list):
            raise AnsibleFilterError(f"{host}: k3s_node_taints must be a list")
        settings.append(
            {
                "name": name,
                "labels": {str(key): str(value) for key, value in sorted(labels.items())},
                "taints": [_taint_dict(taint) for taint in taints],
            }
        )
    return settings


def serial_batch_size(serial, count):
    """Return how many of ``count`` hosts one batch holds for a ``serial`` value.

    ``serial`` is what the ``serial`` play keyword takes: a number of hosts (``2``) or a
    percentage (``"25%"``), rounded down as Ansible does, at least 1. The cluster playbook
    uses it because ``serial`` itself never sees inventory variables.
    """
    text = str(serial).strip()
    try:
        size = int(float(text[:-1]) * int(count) / 100) if text.endswith("%") else int(text)
    except ValueError:
        raise AnsibleFilterError(
            f"k3s_agent_serial: {serial!r} is neither a number of hosts (2) nor a percentage ('25%')"
        ) from None
    if size < 0 or (not text.endswith("%") and size == 0):
        raise AnsibleFilterError(f"k3s_agent_serial: {serial!r} must be at least 1 host or above 0%")
    return max(1, min(size, int(count))) if int(count) > 0 else 1


def _ready_status(node):
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status", "Unknown")
    return "Unknown"


def nodes_not_ready(resources, expected):
    """Return {node name: why} for every expected node that is missing or not Ready.

    ``resources`` is the ``resources`` list of ``kubernetes.core.k8s_info`` for kind Node.
    An empty dict means every expected node is registered and Ready.
    """
    by_name = {}
    for node in resources or []:
        by_name[(node.get("metadata") or {}).get("name")] = node
    problems = {}
    for name in expected or []:
        node = by_name.get(name)
        if node is None:
            problems[name] = "not registered"
            continue
        status = _ready_status(node)
        if status != "True":
            problems[name] = f"Ready={status}"
    return problems


def microk8s_addons_to_enable(status, wanted):
    """Return the ``microk8s enable`` arguments of the wanted addons that are not enabled yet.

    ``status`` is the output of ``microk8s status --format yaml`` (text or parsed); ``wanted``
    lists enable arguments such as ``dns``, ``metallb:10.0.0.240-10.0.0.250`` or
    ``nvidia --gpu-operator-driver host``. An addon's name is the text before ``:`` or a space.
    """
    parsed = yaml.safe_load(str(status)) if isinstance(status, str) else _plain(status or {})
    enabled = set()
    for addon in (parsed or {}).get("addons") or []:
        if addon.get("status") == "enabled":
            enabled.add(addon.get("name"))
    todo = []
    for spec in wanted or []:
        addon = re.split(r"[:\s]", str(spec).strip(), maxsplit=1)[0]
        if addon and addon not in enabled:
            todo.append(str(spec).strip())
    return todo


class FilterModule:
    """The cluster layer's filters."""

    def filters(self):
        return {
            "k3s_config": k3s_config,
            "api_url": api_url,
            "kubeconfig_server": kubeconfig_server,
            "cluster_node_names": cluster_node_names,
            "cluster_node_settings": cluster_node_settings,
            "serial_batch_size": serial_batch_size,
            "nodes_not_ready": nodes_not_ready,
            "microk8s_addons_to_enable": microk8s_addons_to_enable,
        }
