"""Every module fails with a message that names the problem, against the real services."""

from __future__ import annotations

import socket

import pytest

WRONG_TOKEN = "not-the-token-0000000000000000"


@pytest.fixture(scope="module")
def closed_url():
    """A loopback URL nothing listens on (a port just freed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def cases(label_studio, s3_server, closed_url, workdir):
    ls = {"url": label_studio["url"], "token": label_studio["token"]}
    bad_token = dict(ls, token=WRONG_TOKEN)
    down = dict(ls, url=closed_url)
    s3 = {
        "endpoint_url": s3_server["endpoint"],
        "access_key": "ailab-test-access",
        "secret_key": "ailab-test-secret-0123456789",
    }
    missing_bucket = {
        "bucket": "no-such-bucket",
        "prefix": "raw",
        "endpoint_url": s3_server["endpoint"],
        "access_key": "ailab-test-access",
        "secret_key": "ailab-test-secret-0123456789",
    }
    bad_config = (
        "<View><Image name='image' value='$image'/><RectangleLabels name='label' toName='photo'>"
        "<Label value='cat'/></RectangleLabels></View>"
    )
    project = "ailab.platform.label_studio_project"
    tasks = "ailab.platform.label_studio_tasks"
    export = "ailab.platform.label_studio_export"
    mlflow = "ailab.platform.mlflow_model"
    return [
        # Setup, expected to pass: a project with one annotated task.
        (project, dict(ls, title="Bad inputs", classes=["cat"]), None),
        (
            tasks,
            dict(
                ls,
                project="Bad inputs",
                boxes_as="annotations",
                images=[{"url": "http://127.0.0.1:1/a.png", "boxes": [[0, 0.5, 0.5, 0.2, 0.2]]}],
            ),
            None,
        ),
        (
            project,
            dict(bad_token, title="Bad token", classes=["cat"]),
            f"Label Studio rejected the token for {label_studio['url']}",
        ),
        (project, dict(down, title="Down", classes=["cat"]), f"Cannot reach Label Studio at {closed_url}"),
        (project, dict(ls, title="Bad config", label_config=bad_config), "toName='photo'"),
        (project, dict(ls, title="Bad config", label_config="<View><Image"), "label_config is not valid XML"),
        (project, dict(ls, title="Duplicates", classes=["cat", "dog", "cat"]), "duplicate class names: cat"),
        (project, dict(ls, title="Both", classes=["cat"], label_config=bad_config), "mutually exclusive"),
        (
            project,
            dict(ls, title="No bucket", classes=["cat"], source_storage=missing_bucket),
            "the source storage s3://no-such-bucket/raw",
        ),
        (
            tasks,
            dict(bad_token, project="Bad inputs", images=[{"s3_key": "a.png"}]),
            f"Label Studio rejected the token for {label_studio['url']}",
        ),
        (
            tasks,
            dict(down, project="Bad inputs", images=[{"s3_key": "a.png"}]),
            f"Cannot reach Label Studio at {closed_url}",
        ),
        (
            tasks,
            dict(ls, project="No such project", images=[{"s3_key": "a.png"}]),
            f"Label Studio at {label_studio['url']} has no project 'No such project'",
        ),
        (
            tasks,
            dict(ls, project="Bad inputs", images=[{"path": str(workdir / "missing.png")}]),
            "cannot read image",
        ),
        (
            tasks,
            dict(
                ls,
                project="Bad inputs",
                images=[{"url": "http://x/a.png", "boxes": [[5, 0.5, 0.5, 0.1, 0.1]]}],
            ),
            "box class 5 is outside the 1 classes",
        ),
        (
            export,
            dict(bad_token, project="Bad inputs", dest=str(workdir / "x")),
            f"Label Studio rejected the token for {label_studio['url']}",
        ),
        (
            export,
            dict(down, project="Bad inputs", dest=str(workdir / "x")),
            f"Cannot reach Label Studio at {closed_url}",
        ),
        (
            export,
            dict(ls, project="No such project", dest=str(workdir / "x")),
            "has no project 'No such project'",
        ),
        (
            export,
            dict(ls, project="Bad inputs", dest="s3://no-such-bucket/ds", s3=s3),
            f"S3 bucket 'no-such-bucket' does not exist at {s3_server['endpoint']}",
        ),
        (
            export,
            dict(ls, project="Bad inputs", dest=str(workdir / "y"), classes=["dog"]),
            "which is not one of the classes",
        ),
        (
            export,
            dict(ls, project="Bad inputs", dest=str(workdir / "y"), val_fraction=1.5),
            "val_fraction must be in [0, 1)",
        ),
        (
            mlflow,
            {"tracking_uri": closed_url, "name": "m", "source": "s3://b/m"},
            f"Cannot reach MLflow at {closed_url}",
        ),
        (
            mlflow,
            {"tracking_uri": closed_url, "name": "m", "model_file": "/x.pt", "source": "s3://b/m"},
            "mutually exclusive",
        ),
    ]


def test_bad_inputs_fail_with_the_documented_messages(playbook, label_studio, s3_server, closed_url, workdir):
    table = cases(label_studio, s3_server, closed_url, workdir)
    results = playbook(
        [
            {"name": f"Case {i}", module: args, "ignore_errors": True}
            for i, (module, args, _) in enumerate(table)
        ]
    )
    problems = []
    for (module, args, expected), result in zip(table, results, strict=True):
        if expected is None:
            assert not result.get("failed"), result.get("msg")
        elif not result.get("failed") or expected not in result.get("msg", ""):
            problems.append(
                f"{module} {args.get('title') or args.get('project') or args.get('name')}: "
                f"expected {expected!r}, got {result.get('msg')!r}"
            )
        # Secrets never come back in a result, not even in an error.
        assert WRONG_TOKEN not in str(result) and label_studio["token"] not in str(result)
        assert "ailab-test-secret-0123456789" not in str(result)
    assert not problems, "\n".join(problems)
