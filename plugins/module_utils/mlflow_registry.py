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
import json
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode, urlparse

from ansible.module_utils.basic import missing_required_lib
from ansible.module_utils.urls import open_url

SOURCE_TAG = "ailab.source"
SHA_TAG = "ailab.sha256"


class MlflowApiError(Exception):
    """An error answer of the MLflow REST API."""

    def __init__(self, error_code: str, message: str):
        super().__init__(message)
        self.error_code = error_code
        self.message = message


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


def _version(raw: dict) -> SimpleNamespace:
    return SimpleNamespace(
        version=str(raw.get("version")),
        source=raw.get("source"),
        run_id=raw.get("run_id"),
        status=raw.get("status"),
        status_message=raw.get("status_message"),
        tags={tag["key"]: tag.get("value") for tag in raw.get("tags") or []},
        aliases=list(raw.get("aliases") or []),
    )


class MlflowRest:
    """The few MLflow REST 2.0 calls the module needs, through ansible's ``open_url``.

    Plain HTTP rather than the mlflow client: importing mlflow takes seconds and pulls in a large
    dependency tree on the host, for a handful of JSON calls. The client is only needed to upload
    a file to a server that does not proxy artifacts (see ``log_artifact``).
    """

    def __init__(
        self,
        tracking_uri: str,
        timeout: int = 60,
        validate_certs: bool = True,
        username: str | None = None,
        password: str | None = None,
    ):
        self.uri = tracking_uri.rstrip("/")
        self.timeout = timeout
        self.validate_certs = validate_certs
        self.username = username
        self.password = password

    def _call(self, method: str, path: str, body=None, *, query=None, data=None, content_type=None):
        url = self.uri + path + ("?" + urlencode(query) if query else "")
        headers = {"Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            content_type = "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        try:
            response = open_url(
                url,
                data=data,
                headers=headers,
                method=method,
                timeout=self.timeout,
                validate_certs=self.validate_certs,
                url_username=self.username,
                url_password=self.password,
                # MLflow's basic-auth app answers 401 without a challenge browsers would retry on.
                force_basic_auth=bool(self.username),
            )
            raw = response.read()
        except HTTPError as exc:
            if exc.code in (401, 403) and path.startswith("/api/"):
                raise RegistryError(
                    "MLflow at %s refused %s %s with HTTP %d: %s"
                    % (
                        self.uri,
                        method,
                        path,
                        exc.code,
                        "give username and password (or MLFLOW_TRACKING_USERNAME/_PASSWORD); the lab's "
                        "admin password is in <lab_credentials_dir>/mlflow-admin-password"
                        if not self.username
                        else "the user %s has no permission for it, or its password is wrong" % self.username,
                    )
                ) from None
            try:
                payload = json.loads(exc.read() or b"{}")
            except ValueError:
                payload = {}
            raise MlflowApiError(
                payload.get("error_code") or "HTTP_%d" % exc.code,
                payload.get("message") or "HTTP %d from %s %s" % (exc.code, method, path),
            ) from None
        except URLError as exc:
            raise RegistryError("Cannot reach MLflow at %s: %s" % (self.uri, exc.reason)) from None
        except OSError as exc:
            raise RegistryError("Cannot reach MLflow at %s: %s" % (self.uri, exc)) from None
        return json.loads(raw) if raw else {}

    def get_registered_model(self, name):
        return self._call("GET", "/api/2.0/mlflow/registered-models/get", query={"name": name})

    def create_registered_model(self, name):
        return self._call("POST", "/api/2.0/mlflow/registered-models/create", {"name": name})

    def search_model_versions(self, name):
        versions = []
        token = None
        while True:
            query = {"filter": "name='%s'" % name.replace("'", "\\'"), "max_results": 200}
            if token:
                query["page_token"] = token
            answer = self._call("GET", "/api/2.0/mlflow/model-versions/search", query=query)
            versions.extend(_version(v) for v in answer.get("model_versions") or [])
            token = answer.get("next_page_token")
            if not token:
                return versions

    def get_model_version(self, name, version):
        answer = self._call(
            "GET", "/api/2.0/mlflow/model-versions/get", query={"name": name, "version": version}
        )
        return _version(answer["model_version"])

    def create_model_version(self, name, source, run_id=None, tags=None, description=None):
        body = {
            "name": name,
            "source": source,
            "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
        }
        if run_id:
            body["run_id"] = run_id
        if description:
            body["description"] = description
        return _version(self._call("POST", "/api/2.0/mlflow/model-versions/create", body)["model_version"])

    def set_model_version_tag(self, name, version, key, value):
        self._call(
            "POST",
            "/api/2.0/mlflow/model-versions/set-tag",
            {"name": name, "version": str(version), "key": key, "value": value},
        )

    def get_model_version_by_alias(self, name, alias):
        answer = self._call(
            "GET", "/api/2.0/mlflow/registered-models/alias", query={"name": name, "alias": alias}
        )
        return _version(answer["model_version"])

    def set_registered_model_alias(self, name, alias, version):
        self._call(
            "POST",
            "/api/2.0/mlflow/registered-models/alias",
            {"name": name, "alias": alias, "version": str(version)},
        )

    def delete_model_version(self, name, version):
        self._call("DELETE", "/api/2.0/mlflow/model-versions/delete", {"name": name, "version": str(version)})

    def get_experiment_by_name(self, name):
        try:
            answer = self._call(
                "GET", "/api/2.0/mlflow/experiments/get-by-name", query={"experiment_name": name}
            )
        except MlflowApiError as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        return SimpleNamespace(experiment_id=answer["experiment"]["experiment_id"])

    def create_experiment(self, name):
        return self._call("POST", "/api/2.0/mlflow/experiments/create", {"name": name})["experiment_id"]

    def create_run(self, experiment_id, tags=None):
        body = {
            "experiment_id": experiment_id,
            "start_time": int(time.time() * 1000),
            "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
        }
        info = self._call("POST", "/api/2.0/mlflow/runs/create", body)["run"]["info"]
        return SimpleNamespace(
            info=SimpleNamespace(run_id=info["run_id"], artifact_uri=info.get("artifact_uri", ""))
        )

    def log_artifact(self, run, local_file, artifact_path):
        """Upload one file into the run's artifacts.

        A server with proxied artifacts (``--serve-artifacts``, the lab's setup) takes it over HTTP;
        for any other artifact store the mlflow client writes it there itself.
        """
        artifact_uri = run.info.artifact_uri
        name = Path(local_file).name
        if artifact_uri.startswith("mlflow-artifacts:"):
            root = urlparse(artifact_uri).path.strip("/")
            path = "/".join(p for p in (root, artifact_path.strip("/"), name) if p)
            self._call(
                "PUT",
                "/api/2.0/mlflow-artifacts/artifacts/" + quote(path),
                data=Path(local_file).read_bytes(),
                content_type="application/octet-stream",
            )
            return
        try:
            # Imported here only: mlflow is optional and slow to import.
            from mlflow.tracking import MlflowClient  # noqa: PLC0415
        except ImportError:
            raise RegistryError(
                "MLflow at %s stores artifacts at %s, which only the mlflow client can write: %s"
                % (self.uri, artifact_uri, missing_required_lib("mlflow-skinny"))
            ) from None
        MlflowClient(tracking_uri=self.uri).log_artifact(run.info.run_id, local_file, artifact_path)

    def set_terminated(self, run_id, status):
        self._call(
            "POST",
            "/api/2.0/mlflow/runs/update",
            {"run_id": run_id, "status": status, "end_time": int(time.time() * 1000)},
        )


def make_client(
    tracking_uri: str,
    timeout: int = 60,
    validate_certs: bool = True,
    username: str | None = None,
    password: str | None = None,
) -> MlflowRest:
    return MlflowRest(tracking_uri, timeout, validate_certs, username, password)


def _versions(client, name: str) -> list:
    return client.search_model_versions(name)


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
        client.log_artifact(run, model_file, artifact_path)
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
    except MlflowApiError as exc:
        raise RegistryError("MLflow rejected the request for model %r: %s" % (name, exc.message)) from None


def _ensure(client, params: dict, check_mode: bool, name: str, result: dict) -> dict:
    try:
        client.get_registered_model(name)
        model_exists = True
    except MlflowApiError as exc:
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
        except MlflowApiError as exc:
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
