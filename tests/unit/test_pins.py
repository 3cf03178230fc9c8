"""The versions pinned for the server image are the versions the tests ran with."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for raw in path.read_text().splitlines():
        requirement = raw.split("#", 1)[0].strip()
        if "==" in requirement and not requirement.startswith("-"):
            name, version = requirement.split("==", 1)
            pins[name.lower().replace("_", "-")] = version.strip()
    return pins


def test_serving_image_pins_match_the_tested_environment():
    tested = _pins(REPO / "requirements" / "dev.txt")
    image = _pins(REPO / "serving" / "constraints.txt")
    assert image, "serving/constraints.txt pins nothing"
    drifted = {
        name: (version, tested.get(name)) for name, version in image.items() if tested.get(name) != version
    }
    assert not drifted, f"run make serving-constraints; image pin vs tested: {drifted}"


def test_the_tested_environment_pins_torch_and_ultralytics():
    tested = _pins(REPO / "requirements" / "dev.txt")
    assert tested["torch"] == "2.14.1"
    assert tested["ultralytics"].startswith("8.4.")


def test_notebook_image_pins_the_server_images_versions():
    # The notebook image reuses the server image's layers in the tests and shares its torch,
    # ultralytics and mlflow: where both pin a package, they pin the same version.
    server = _pins(REPO / "serving" / "constraints.txt")
    notebook = _pins(REPO / "notebook" / "constraints.txt")
    assert {"torch", "ultralytics", "mlflow", "boto3", "jupyterlab"} <= set(notebook)
    drifted = {n: (v, server[n]) for n, v in notebook.items() if n in server and server[n] != v}
    assert not drifted, f"run make notebook-constraints; notebook pin vs server pin: {drifted}"
    # jupyterhub-singleuser talks to the hub: the chart's JupyterHub version.
    assert notebook["jupyterhub"] == "5.5.0"
