"""Writing a planned dataset idempotently (plugins/module_utils/dataset_export.py)."""

import json

from ansible_collections.ailab.platform.plugins.module_utils.dataset_export import (
    MANIFEST,
    LocalStore,
    write_dataset,
)
from ansible_collections.ailab.platform.plugins.module_utils.yolo_dataset import build_export_plan


def region(label="cat"):
    return {
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "value": {"x": 10, "y": 10, "width": 20, "height": 20, "rectanglelabels": [label]},
    }


def make_tasks(n):
    return [
        {"id": i, "data": {"image": f"s3://b/img{i}.png"}, "annotations": [{"result": [region()]}]}
        for i in range(n)
    ]


class Fetcher:
    def __init__(self):
        self.calls = []

    def __call__(self, item):
        self.calls.append(item["uri"])
        return ("image bytes of {}".format(item["uri"])).encode()


def export(tmp_path, tasks, classes=("cat", "dog"), check_mode=False, fetch=None):
    plan = build_export_plan(tasks, list(classes), "image", val_fraction=0.25, seed=0)
    fetch = fetch or Fetcher()
    store = LocalStore(str(tmp_path / "ds"))
    outcome = write_dataset(store, plan, list(classes), fetch, check_mode=check_mode, yaml_path=store.root)
    return outcome, fetch


def files_under(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_first_export_writes_everything_and_a_second_writes_nothing(tmp_path):
    outcome, fetch = export(tmp_path, make_tasks(4))
    assert outcome["changed"] and outcome["fetched"] == 4 and len(fetch.calls) == 4
    root = tmp_path / "ds"
    assert len(list((root / "images").rglob("*.png"))) == 4
    assert len(list((root / "labels").rglob("*.txt"))) == 4
    assert (root / "data.yaml").read_text().startswith("# Written by")
    manifest = json.loads((root / MANIFEST).read_text())
    assert set(manifest["sources"].values()) == {f"s3://b/img{i}.png" for i in range(4)}
    before = {p: (root / p).stat().st_mtime_ns for p in files_under(root)}

    again, fetch = export(tmp_path, make_tasks(4))
    assert again == {"changed": False, "written": [], "removed": [], "fetched": 0}
    assert fetch.calls == []
    assert {p: (root / p).stat().st_mtime_ns for p in files_under(root)} == before


def test_changed_annotation_rewrites_only_its_label(tmp_path):
    export(tmp_path, make_tasks(3))
    tasks = make_tasks(3)
    tasks[1]["annotations"][0]["result"][0]["value"]["rectanglelabels"] = ["dog"]
    outcome, fetch = export(tmp_path, tasks)
    assert outcome["changed"] and fetch.calls == []
    assert len(outcome["written"]) == 1 and outcome["written"][0].endswith("img1.txt")


def test_removed_task_removes_its_files_and_a_tampered_label_is_restored(tmp_path):
    export(tmp_path, make_tasks(3))
    root = tmp_path / "ds"
    label = next((root / "labels").rglob("img0.txt"))
    label.write_text("garbage\n")
    outcome = export(tmp_path, [*make_tasks(3)[:2]])[0]
    assert any(p.endswith("img2.png") for p in outcome["removed"])
    assert not list(root.rglob("img2.*"))
    assert label.read_text().startswith("0 ")


def test_check_mode_reports_without_writing(tmp_path):
    outcome, fetch = export(tmp_path, make_tasks(2), check_mode=True)
    assert outcome["changed"] and fetch.calls == []
    assert not (tmp_path / "ds").exists()
