"""playbooks/platform.yml as a whole against the test control plane (tests/kube/).

What each service role does is tested in its own file (test_metallb.py, test_storage.py, ...);
here: the play stops before anything changes when it cannot reach the API.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

PLAYBOOK = "playbooks/platform.yml"


def test_unreachable_api_fails_first_with_the_fix(
    playbook: Callable[..., Any], kube_cluster: Any, tmp_path: Path
) -> None:
    # The control plane's kubeconfig with the server moved to a port nothing listens on.
    config = yaml.safe_load(Path(kube_cluster.kubeconfig).read_text())
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))

    run = playbook(PLAYBOOK, {"lab_kubeconfig": str(kubeconfig)}, check=False)
    assert run.returncode != 0
    assert "cannot reach the Kubernetes API at https://127.0.0.1:1" in run.stdout, run.tail()
    assert "has cluster.yml run? is lab_kubeconfig" in run.stdout
    assert "Traceback" not in run.stdout
    assert run.recap()["changed"] == 0


def test_missing_kubeconfig_names_the_variable(playbook: Callable[..., Any], tmp_path: Path) -> None:
    run = playbook(PLAYBOOK, {"lab_kubeconfig": str(tmp_path / "nowhere")}, check=False)
    assert run.returncode != 0
    assert f"lab_kubeconfig ({tmp_path / 'nowhere'}) does not exist: has cluster.yml run?" in run.stdout
    assert run.recap()["changed"] == 0
