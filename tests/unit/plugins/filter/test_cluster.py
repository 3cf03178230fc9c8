"""Unit tests for plugins/filter/cluster.py (the cluster layer's filters)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError

_SOURCE = Path(__file__).resolve().parents[4] / "plugins" / "filter" / "cluster.py"
_SPEC = importlib.util.spec_from_file_location("ailab_filter_cluster", _SOURCE)
cluster = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(cluster)

SERVER_DEFAULTS = {
    "write-kubeconfig-mode": "0600",
    "disable": ["servicelb"],
    "tls-san": ["10.0.0.1", "lab.local"],
}

K3S_KUBECONFIG = """\
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0E=
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
"""


class TestK3sConfig:
    def test_defaults_alone_come_back_sorted(self):
        result = cluster.k3s_config(SERVER_DEFAULTS)
        assert result == SERVER_DEFAULTS
        assert list(result) == sorted(SERVER_DEFAULTS)

    def test_user_scalar_wins(self):
        result = cluster.k3s_config(SERVER_DEFAULTS, {"write-kubeconfig-mode": "0640"})
        assert result["write-kubeconfig-mode"] == "0640"

    def test_user_list_adds_to_default_list_without_repeats(self):
        result = cluster.k3s_config(SERVER_DEFAULTS, {"disable": ["traefik", "servicelb"]})
        assert result["disable"] == ["servicelb", "traefik"]

    def test_null_removes_a_default(self):
        result = cluster.k3s_config(SERVER_DEFAULTS, {"disable": None})
        assert "disable" not in result

    def test_nested_dicts_merge(self):
        result = cluster.k3s_config({"kubelet": {"a": 1, "b": 2}}, {"kubelet": {"b": 3, "c": 4}})
        assert result == {"kubelet": {"a": 1, "b": 3, "c": 4}}

    def test_defaults_are_not_mutated(self):
        defaults = {"disable": ["servicelb"]}
        cluster.k3s_config(defaults, {"disable": ["traefik"]})
        assert defaults == {"disable": ["servicelb"]}

    def test_labels_and_taints_from_host_vars(self):
        result = cluster.k3s_config(
            {},
            {},
            node_labels={"zone": "b", "ailab.io/accelerator": "nvidia"},
            node_taints=["gpu=true:NoSchedule", {"key": "dedicated", "effect": "NoExecute"}],
        )
        assert result["node-label"] == ["ailab.io/accelerator=nvidia", "zone=b"]
        assert result["node-taint"] == ["gpu=true:NoSchedule", "dedicated:NoExecute"]

    def test_user_node_labels_add_to_host_labels(self):
        result = cluster.k3s_config({}, {"node-label": ["x=y"]}, node_labels={"a": "b"})
        assert result["node-label"] == ["a=b", "x=y"]

    @pytest.mark.parametrize(
        "taint",
        ["gpu=true:Sometimes", "no-effect", {"key": "k"}, {"key": "k", "effect": "NoSchedule", "x": 1}],
    )
    def test_bad_taints_name_the_variable(self, taint):
        with pytest.raises(AnsibleFilterError, match="k3s_node_taints"):
            cluster.k3s_config({}, {}, node_taints=[taint])

    def test_user_config_must_be_a_dict(self):
        with pytest.raises(AnsibleFilterError, match="must be a dict"):
            cluster.k3s_config({}, ["disable=traefik"])

    def test_labels_must_be_a_dict(self):
        with pytest.raises(AnsibleFilterError, match="k3s_node_labels"):
            cluster.k3s_config({}, {}, node_labels=["a=b"])


class TestApiUrl:
    @pytest.mark.parametrize(
        ("address", "expected"),
        [
            ("10.0.0.1", "https://10.0.0.1:6443"),
            ("lab-server", "https://lab-server:6443"),
            ("fd00::1", "https://[fd00::1]:6443"),
            ("[fd00::1]", "https://[fd00::1]:6443"),
        ],
    )
    def test_formats_the_url(self, address, expected):
        assert cluster.api_url(address) == expected

    def test_port(self):
        assert cluster.api_url("node", 16443) == "https://node:16443"

    def test_empty_address_fails(self):
        with pytest.raises(AnsibleFilterError, match="empty"):
            cluster.api_url(" ")


class TestKubeconfigServer:
    def test_rewrites_loopback_and_keeps_port_and_credentials(self):
        result = yaml.safe_load(cluster.kubeconfig_server(K3S_KUBECONFIG, "192.168.1.10"))
        assert result["clusters"][0]["cluster"]["server"] == "https://192.168.1.10:6443"
        assert result["clusters"][0]["cluster"]["certificate-authority-data"] == "Q0E="
        assert result["users"][0]["user"]["client-key-data"] == "S0VZ"

    def test_ipv6_address_gets_brackets(self):
        result = yaml.safe_load(cluster.kubeconfig_server(K3S_KUBECONFIG, "fd00::10"))
        assert result["clusters"][0]["cluster"]["server"] == "https://[fd00::10]:6443"

    def test_microk8s_port_kept(self):
        text = K3S_KUBECONFIG.replace("127.0.0.1:6443", "127.0.0.1:16443")
        result = yaml.safe_load(cluster.kubeconfig_server(text, "lab-server"))
        assert result["clusters"][0]["cluster"]["server"] == "https://lab-server:16443"

    def test_non_loopback_server_left_alone(self):
        text = K3S_KUBECONFIG.replace("127.0.0.1", "10.9.9.9")
        result = yaml.safe_load(cluster.kubeconfig_server(text, "192.168.1.10"))
        assert result["clusters"][0]["cluster"]["server"] == "https://10.9.9.9:6443"

    def test_rename(self):
        result = yaml.safe_load(cluster.kubeconfig_server(K3S_KUBECONFIG, "10.0.0.1", name="ailab"))
        assert result["current-context"] == "ailab"
        assert result["contexts"][0] == {"context": {"cluster": "ailab", "user": "ailab"}, "name": "ailab"}
        assert result["clusters"][0]["name"] == "ailab"
        assert result["users"][0]["name"] == "ailab"

    def test_accepts_a_parsed_dict(self):
        parsed = yaml.safe_load(K3S_KUBECONFIG)
        result = yaml.safe_load(cluster.kubeconfig_server(parsed, "10.0.0.1"))
        assert result["clusters"][0]["cluster"]["server"] == "https://10.0.0.1:6443"
        assert parsed["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"

    def test_not_a_kubeconfig(self):
        with pytest.raises(AnsibleFilterError, match="not a kubeconfig"):
            cluster.kubeconfig_server("hello: world", "10.0.0.1")


class TestClusterNodeNames:
    def test_precedence(self):
        hostvars = {
            "a": {"k3s_node_name": "custom", "ansible_facts": {"nodename": "ignored"}},
            "b": {"ansible_facts": {"nodename": "b-host"}},
            "c": {},
        }
        assert cluster.cluster_node_names(["a", "b", "c", "d"], hostvars) == ["custom", "b-host", "c", "d"]

    def test_full_host_name_as_k3s_registers_it(self):
        # k3s names the node after os.Hostname() (the kernel's nodename), lower-cased; Ansible's
        # `hostname` fact is only the part before the first dot.
        hostvars = {"gpu1": {"ansible_facts": {"hostname": "GPU1", "nodename": "GPU1.Lab.Example"}}}
        assert cluster.cluster_node_names(["gpu1"], hostvars) == ["gpu1.lab.example"]

    def test_node_name_in_the_k3s_config(self):
        hostvars = {
            "s": {"k3s_server_config": {"node-name": "cp-1"}, "ansible_facts": {"nodename": "s.lab"}},
            "a": {"k3s_agent_config": {"node-name": "worker-1"}, "ansible_facts": {"nodename": "a.lab"}},
        }
        assert cluster.cluster_node_names(["s", "a"], hostvars) == ["cp-1", "worker-1"]


class TestClusterNodeSettings:
    def test_labels_and_taints_per_node(self):
        hostvars = {
            "gpu1": {
                "ansible_facts": {"nodename": "gpu1.lab"},
                "k3s_node_labels": {"ailab.io/accelerator": "nvidia", "zone": 1},
                "k3s_node_taints": [
                    "nvidia.com/gpu=true:NoSchedule",
                    {"key": "dedicated", "effect": "NoExecute"},
                ],
            },
            "cpu1": {},
        }
        assert cluster.cluster_node_settings(["gpu1", "cpu1"], hostvars) == [
            {
                "name": "gpu1.lab",
                "labels": {"ailab.io/accelerator": "nvidia", "zone": "1"},
                "taints": [
                    {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"},
                    {"key": "dedicated", "effect": "NoExecute"},
                ],
            },
            {"name": "cpu1", "labels": {}, "taints": []},
        ]

    def test_bad_taint_names_the_problem(self):
        with pytest.raises(AnsibleFilterError, match="NoWhere"):
            cluster.cluster_node_settings(["a"], {"a": {"k3s_node_taints": ["k=v:NoWhere"]}})


class TestSerialBatchSize:
    @pytest.mark.parametrize(
        ("serial", "count", "size"),
        [(1, 5, 1), ("2", 5, 2), ("100%", 5, 5), ("25%", 8, 2), ("30%", 5, 1), ("10%", 3, 1), (9, 3, 3)],
    )
    def test_sizes_like_ansible(self, serial, count, size):
        assert cluster.serial_batch_size(serial, count) == size

    @pytest.mark.parametrize("serial", ["half", "0", "-1"])
    def test_bad_value_names_the_variable(self, serial):
        with pytest.raises(AnsibleFilterError, match="k3s_agent_serial"):
            cluster.serial_batch_size(serial, 4)


def _node(name, ready="True"):
    return {"metadata": {"name": name}, "status": {"conditions": [{"type": "Ready", "status": ready}]}}


class TestNodesNotReady:
    def test_all_ready(self):
        assert cluster.nodes_not_ready([_node("a"), _node("b")], ["a", "b"]) == {}

    def test_missing_and_not_ready_are_named(self):
        result = cluster.nodes_not_ready([_node("a"), _node("b", "False"), _node("extra")], ["a", "b", "c"])
        assert result == {"b": "Ready=False", "c": "not registered"}

    def test_node_without_conditions_is_unknown(self):
        assert cluster.nodes_not_ready([{"metadata": {"name": "a"}}], ["a"]) == {"a": "Ready=Unknown"}

    def test_no_resources(self):
        assert cluster.nodes_not_ready(None, ["a"]) == {"a": "not registered"}


class TestMicrok8sAddons:
    STATUS = """\
microk8s:
  running: true
addons:
- name: dns
  status: enabled
- name: metallb
  status: disabled
- name: hostpath-storage
  status: disabled
"""

    def test_only_missing_addons(self):
        wanted = [
            "dns",
            "hostpath-storage",
            "metallb:10.0.0.240-10.0.0.250",
            "nvidia --gpu-operator-driver host",
        ]
        assert cluster.microk8s_addons_to_enable(self.STATUS, wanted) == [
            "hostpath-storage",
            "metallb:10.0.0.240-10.0.0.250",
            "nvidia --gpu-operator-driver host",
        ]

    def test_all_enabled(self):
        assert cluster.microk8s_addons_to_enable(self.STATUS, ["dns"]) == []


def test_filter_module_lists_every_filter():
    names = set(cluster.FilterModule().filters())
    assert names == {
        "k3s_config",
        "api_url",
        "kubeconfig_server",
        "cluster_node_names",
        "cluster_node_settings",
        "serial_batch_size",
        "nodes_not_ready",
        "microk8s_addons_to_enable",
    }
