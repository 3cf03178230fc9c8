# Copyright: ailab maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Register model versions in MLflow and move their aliases, idempotently.

A version is known by the source it was registered from (recorded as the tag ``ailab.source``,
because the server may rewrite ``runs:/`` sources into artifact locations) or, for a file
uploaded as a new run, by the file's SHA-256 (tag ``ailab.sha256``): uploading the same weights
twice gives one version.
"""

from __future__ import annotations

import hashlib
import os
import time
import traceback
from pathlib import Path
from urllib.error import HTTPError, URLError

from ansible.module_utils.urls import open_url

try:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    HAS_MLFLOW = True
    MLFLOW_IMPORT_ERROR = None
except ImportError:
    HAS_MLFLOW = False
    MLFLOW_IMPORT_ERROR = traceback.format_exc()

    class MlflowException(Exception):  # type: ignore[no-redef]  # a stand-in so except clauses compile
        pass


SOURCE_TAG = "ailab.source"
SHA_TAG = "ailab.sha256"


class RegistryError(Exception):
    """A registry operation that failed; the message is meant for the user."""


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_server(tracking_uri: str, timeout: int = 10, validate_certs: bool = True) -> None:
    """Fail fast with the URI named when the tracking server does not answer (the MLflow client
    would otherwise retry for minutes)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return  # a local store (file:, sqlite:) needs no server
    try:
        open_url(tracking_uri.rstrip("/") + "/health", timeout=timeout, validate_certs=validate_certs).read()
    except HTTPError as exc:
        raise RegistryError("MLflow at %s answered HTTP %d on /health" % (tracking_uri, exc.code)) from None
    except URLError as exc:
        raise RegistryError("Cannot reach MLflow at %s: %s" % (tracking_uri, exc.reason)) from None
    except OSError as exc:
        raise RegistryError("Cannot reach MLflow at %s: %s" % (tracking_uri, exc)) from None


def make_client(tracking_uri: str, timeout: int = 60):
    # Bounded: the client's default is 7 retries with backoff, minutes before an error shows.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout))
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _versions(client, name: str) -> list:
    return list(client.search_model_versions("name='%s'" % name.replace("'", "\\'")))


def _find_version(versions: list, source: str | None, sha: str | None):
    for version in sorted(versions, key=lambda v: int(v.version)):
        tags = version.tags or {}
        if sha and tags.get(SHA_TAG) == sha:
            return version
        if source and (tags.get(SOURCE_TAG) == source or version.source == source):
            return version
    return None


def _wait_ready(client, name: str, version: str, wait_s: int = 300):
    deadline = time.monotonic() + wait_s
    while True:
        mv = client.get_model_version(name, version)
        if mv.status == "READY":
            return mv
        if mv.status == "FAILED_REGISTRATION":
            raise RegistryError(
                "MLflow failed to register %s version %s: %s" % (name, version, mv.status_message)
            )
        if time.monotonic() > deadline:
            raise RegistryError("%s version %s is still %s after %d s" % (name, version, mv.status, wait_s))
        time.sleep(1)


def _upload_run(client, experiment: str, model_file: str, artifact_path: str, sha: str) -> str:
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(
        experiment_id, tags={"mlflow.runName": "upload-%s" % Path(model_file).name, SHA_TAG: sha}
    )
    try:
        client.log_artifact(run.info.run_id, model_file, artifact_path)
    except Exception:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def ensure_model_version(client, params: dict, check_mode: bool) -> dict:
    """Apply the module's parameters; returns the module result."""
    name = params["name"]
    result = {"changed": False, "actions": [], "name": name, "version": None, "source": None, "run_id": None}
    try:
        return _ensure(client, params, check_mode, name, result)
    except MlflowException as exc:
        raise RegistryError("MLflow rejected the request for model %r: %s" % (name, exc.message)) from None


def _ensure(client, params: dict, check_mode: bool, name: str, result: dict) -> dict:
    try:
        client.get_registered_model(name)
        model_exists = True
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        model_exists = False

    model_file = params.get("model_file")
    sha = None
    if model_file:
        if not Path(model_file).is_file():
            raise RegistryError("model_file %s does not exist on this host" % model_file)
        sha = file_sha256(model_file)
    source = params.get("source")
    versions = _versions(client, name) if model_exists else []

    if params.get("version"):
        matching = [v for v in versions if str(v.version) == str(params["version"])]
        version = matching[0] if matching else None
        if version is None and params["state"] == "present":
            raise RegistryError("model %r has no version %s" % (name, params["version"]))
    else:
        version = _find_version(versions, source, sha)

    if params["state"] == "absent":
        if version is not None:
            result.update(changed=True, version=str(version.version), source=version.source)
            result["actions"].append("delete version %s" % version.version)
            if not check_mode:
                client.delete_model_version(name, version.version)
        return result

    if not model_exists:
        result["changed"] = True
        result["actions"].append("create registered model")
        if not check_mode:
            client.create_registered_model(name)

    if version is None:
        if not (source or model_file):
            raise RegistryError("give source, model_file or version to choose the model version of %r" % name)
        result["changed"] = True
        if check_mode:
            result["actions"].append("register a new version")
            result["source"] = source
            return result
        run_id = params.get("run_id")
        if model_file:
            run_id = _upload_run(client, params["experiment"], model_file, params["artifact_path"], sha)
            source = "runs:/%s/%s" % (run_id, params["artifact_path"])
            result["actions"].append("upload %s as run %s" % (Path(model_file).name, run_id))
        elif source.startswith("runs:/") and not run_id:
            run_id = source[len("runs:/") :].split("/", 1)[0]
        tags = {SOURCE_TAG: source}
        if sha:
            tags[SHA_TAG] = sha
        created = client.create_model_version(
            name, source, run_id=run_id, tags=tags, description=params.get("description")
        )
        version = _wait_ready(client, name, created.version)
        result["actions"].append("register version %s" % version.version)

    result.update(version=str(version.version), source=version.source, run_id=version.run_id)

    wanted_tags = {k: str(v) for k, v in (params.get("tags") or {}).items()}
    current_tags = version.tags or {}
    for key, value in sorted(wanted_tags.items()):
        if current_tags.get(key) != value:
            result["changed"] = True
            result["actions"].append("set tag %s" % key)
            if not check_mode:
                client.set_model_version_tag(name, version.version, key, value)

    alias = params.get("alias")
    if alias:
        previous = None
        try:
            previous = client.get_model_version_by_alias(name, alias).version if model_exists else None
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
        result["previous_alias_version"] = None if previous is None else str(previous)
        if str(previous) != str(version.version):
            result["changed"] = True
            result["actions"].append("point alias %s at version %s" % (alias, version.version))
            if not check_mode:
                client.set_registered_model_alias(name, alias, version.version)
        result["model_uri"] = "models:/%s@%s" % (name, alias)
    else:
        result["model_uri"] = "models:/%s/%s" % (name, version.version)
    result["tags"] = dict(current_tags, **wanted_tags)
    return result
