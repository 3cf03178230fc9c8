"""Each module's DOCUMENTATION, EXAMPLES and RETURN parse, and the documented options are exactly
the argument spec (names, types, defaults, choices, required, no_log of secrets)."""

import importlib

import pytest
import yaml

MODULES = [
    "label_studio_project",
    "label_studio_tasks",
    "label_studio_export",
    "mlflow_model",
    "gpu_facts",
    "service_ready",
]
SECRET_WORDS = ("token", "secret", "password", "access_key")


class Captured(Exception):
    def __init__(self, kwargs):
        super().__init__("captured")
        self.kwargs = kwargs


def argument_spec(module):
    def capture(**kwargs):
        raise Captured(kwargs)

    original = module.AnsibleModule
    module.AnsibleModule = capture
    try:
        module.main()
    except Captured as caught:
        return caught.kwargs["argument_spec"]
    finally:
        module.AnsibleModule = original
    raise AssertionError("main() did not build an AnsibleModule")


def compare(doc_options, spec, where):
    assert sorted(doc_options) == sorted(spec), where
    for name, option in spec.items():
        doc = doc_options[name]
        path = f"{where}.{name}"
        assert doc.get("type", "str") == option.get("type", "str"), path
        assert doc.get("default") == option.get("default"), path
        assert bool(doc.get("required")) == bool(option.get("required")), path
        assert doc.get("choices") == option.get("choices"), path
        assert doc.get("elements") == option.get("elements"), path
        assert doc.get("description"), path
        if any(word in name for word in SECRET_WORDS) and name != "s3_key":
            assert option.get("no_log") is True, f"{path} must be no_log"
        if "options" in option:
            compare(doc["suboptions"], option["options"], path)


def documented_options(doc):
    """The module's own options plus those of the collection's doc fragments it extends."""
    options = {}
    for fragment in doc.get("extends_documentation_fragment", []):
        namespace, collection, name = fragment.split(".")
        assert (namespace, collection) == ("ailab", "platform"), fragment
        fragment_module = importlib.import_module(
            f"ansible_collections.ailab.platform.plugins.doc_fragments.{name}"
        )
        options.update(yaml.safe_load(fragment_module.ModuleDocFragment.DOCUMENTATION).get("options", {}))
    options.update(doc["options"])
    return options


@pytest.mark.parametrize("name", MODULES)
def test_documentation_matches_the_argument_spec(name):
    module = importlib.import_module(f"ansible_collections.ailab.platform.plugins.modules.{name}")
    doc = yaml.safe_load(module.DOCUMENTATION)
    assert doc["module"] == name
    assert doc["short_description"] and doc["author"]
    compare(documented_options(doc), argument_spec(module), name)
    examples = yaml.safe_load(module.EXAMPLES)
    assert examples and all(
        f"ailab.platform.{name}" in task
        for task in examples
        if "name" in task and not task["name"].startswith("Show")
    )
    returned = yaml.safe_load(module.RETURN)
    assert all("description" in value and "type" in value for value in returned.values())


@pytest.mark.parametrize("name", MODULES)
def test_documentation_says_which_python_runs_the_module(name):
    # Interpreter discovery in ad-hoc use can pick a Python without the module's requirements.
    module = importlib.import_module(f"ansible_collections.ailab.platform.plugins.modules.{name}")
    doc = yaml.safe_load(module.DOCUMENTATION)
    assert "ailab.platform.python_interpreter" in doc["extends_documentation_fragment"]
    assert "-e ansible_python_interpreter=" in module.EXAMPLES
