# Copyright: ailab maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small Label Studio REST client and the operations the modules share.

Plain HTTP through ansible's ``open_url`` rather than label-studio-sdk: the SDK pulls in pydantic
and a generated client for a handful of calls, and this keeps the modules free of extra Python
requirements on the host. Auth is the legacy token (``Authorization: Token ...``), which the lab
enables with ``LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode

from ansible.module_utils.urls import open_url

# Options every Label Studio module takes; the modules document them.
CONNECTION_ARGSPEC = {
    "url": {"type": "str", "required": True},
    "token": {"type": "str", "required": True, "no_log": True},
    "validate_certs": {"type": "bool", "default": True},
    "timeout": {"type": "int", "default": 60},
}

# Storage fields compared for idempotence (the API never returns the credentials).
S3_COMPARED_FIELDS = ("bucket", "prefix", "regex_filter", "use_blob_urls", "s3_endpoint", "region_name")
S3_IMPORT_ONLY_FIELDS = ("presign", "presign_ttl", "recursive_scan")
S3_EXPORT_ONLY_FIELDS = ("can_delete_objects",)

# Collection endpoints (Django routes: the import list has a trailing slash, the export one none).
STORAGE_LIST = {"source": "/api/storages/s3/", "target": "/api/storages/export/s3"}
STORAGE_ITEM = {"source": "/api/storages/s3/%d", "target": "/api/storages/export/s3/%d"}


class LabelStudioError(Exception):
    """A Label Studio call that failed; the message is meant for the user."""


class LabelStudioClient:
    """Token-authenticated JSON calls against one Label Studio."""

    def __init__(self, url: str, token: str, validate_certs: bool = True, timeout: int = 60):
        if not url or not url.startswith(("http://", "https://")):
            raise LabelStudioError("url must start with http:// or https://, got %r" % (url,))
        self.url = url.rstrip("/")
        self.token = token
        self.validate_certs = validate_certs
        self.timeout = timeout

    def _open(
        self,
        path_or_url: str,
        method: str = "GET",
        data=None,
        *,
        headers=None,
        auth: bool = True,
        follow_redirects: str = "urllib2",
    ):
        url = path_or_url if path_or_url.startswith(("http://", "https://")) else self.url + path_or_url
        all_headers = {"Accept": "application/json"}
        if auth:
            all_headers["Authorization"] = "Token %s" % self.token
        all_headers.update(headers or {})
        try:
            return open_url(
                url,
                data=data,
                headers=all_headers,
                method=method,
                timeout=self.timeout,
                validate_certs=self.validate_certs,
                follow_redirects=follow_redirects,
            )
        except HTTPError as exc:
            if exc.code in (401, 403) and auth and url.startswith(self.url):
                raise LabelStudioError("Label Studio rejected the token for %s" % self.url) from None
            raise
        except URLError as exc:
            raise LabelStudioError("Cannot reach Label Studio at %s: %s" % (self.url, exc.reason)) from None
        except OSError as exc:  # timeouts and resets surface as socket errors
            raise LabelStudioError("Cannot reach Label Studio at %s: %s" % (self.url, exc)) from None

    def request(self, method: str, path: str, body=None, what: str | None = None):
        """Call the API and return decoded JSON (None for an empty body).

        ``what`` names the object for error messages ("project 'cats'").
        """
        data = None
        headers = {}
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        try:
            response = self._open(path, method=method, data=data, headers=headers)
            raw = response.read()
        except HTTPError as exc:
            raise LabelStudioError(self._describe_error(exc, method, path, what)) from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise LabelStudioError(
                "%s %s%s did not answer JSON: is %s a Label Studio?" % (method, self.url, path, self.url)
            ) from None

    def _describe_error(self, exc: HTTPError, method: str, path: str, what: str | None) -> str:
        try:
            payload = json.loads(exc.read() or b"{}")
        except ValueError:
            payload = {}
        detail = payload.get("validation_errors") or payload.get("detail") or exc.reason
        if isinstance(detail, (dict, list)):
            detail = json.dumps(detail, sort_keys=True)
        if exc.code == 404:
            return "Label Studio at %s has no %s (%s %s answered 404)" % (
                self.url,
                what or path,
                method,
                path,
            )
        return "Label Studio rejected %s: %s (HTTP %d from %s %s)" % (
            what or "the request",
            detail,
            exc.code,
            method,
            path,
        )

    def get_bytes(self, path_or_url: str, auth: bool = True) -> bytes:
        try:
            return self._open(path_or_url, auth=auth).read()
        except HTTPError as exc:
            raise LabelStudioError(
                "Cannot download %s: HTTP %d %s" % (path_or_url, exc.code, exc.reason)
            ) from None

    def upload_file(self, project_id: int, filename: str, content: bytes) -> str:
        """Upload one file to a project without creating a task; return the URL a task uses."""
        boundary = uuid.uuid4().hex
        safe_name = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
        body = b"".join(
            [
                ("--%s\r\n" % boundary).encode(),
                ('Content-Disposition: form-data; name="file"; filename="%s"\r\n' % safe_name).encode(
                    "utf-8"
                ),
                b"Content-Type: application/octet-stream\r\n\r\n",
                content,
                ("\r\n--%s--\r\n" % boundary).encode(),
            ]
        )
        path = "/api/projects/%d/import?commit_to_project=false" % project_id
        try:
            response = self._open(
                path,
                method="POST",
                data=body,
                headers={"Content-Type": "multipart/form-data; boundary=%s" % boundary},
            )
            answer = json.loads(response.read())
        except HTTPError as exc:
            raise LabelStudioError(
                self._describe_error(exc, "POST", path, "the upload of %s" % filename)
            ) from None
        upload_ids = answer.get("file_upload_ids") or []
        if len(upload_ids) != 1:
            raise LabelStudioError("Label Studio did not store %s: %r" % (filename, answer))
        upload = self.request("GET", "/api/import/file-upload/%d" % upload_ids[0], what="file upload")
        # The API answers the storage path ("upload/1/x.png"); tasks use the media URL.
        return "/data/" + upload["file"].lstrip("/")

    def fetch_image(self, task_id: int, uri: str, s3_get=None) -> bytes:
        """Download a task's image.

        ``s3://`` URIs go through ``s3_get(uri)`` when given, else through Label Studio's resolver,
        whose redirect to a presigned URL is followed without the token (S3 rejects a request
        that carries two kinds of auth).
        """
        if uri.startswith("s3://"):
            if s3_get is not None:
                return s3_get(uri)
            encoded = base64.urlsafe_b64encode(uri.encode("utf-8")).decode("ascii")
            path = "/tasks/%d/resolve/?fileuri=%s" % (task_id, quote(encoded))
            try:
                return self._open(path, follow_redirects="none").read()
            except HTTPError as exc:
                location = exc.headers.get("Location") if exc.headers else None
                if exc.code in (301, 302, 303, 307, 308) and location:
                    return self.get_bytes(location, auth=False)
                raise LabelStudioError(
                    "Label Studio could not resolve %s for task %d: HTTP %d (is an S3 source storage "
                    "covering it attached to the project?)" % (uri, task_id, exc.code)
                ) from None
        if uri.startswith(("http://", "https://")):
            return self.get_bytes(uri, auth=uri.startswith(self.url))
        # Uploaded files ("/data/upload/..") and local-files URLs live on Label Studio itself.
        return self.get_bytes(uri if uri.startswith("/") else "/" + uri)

    # Projects

    def list_projects(self) -> list:
        projects = []
        page = 1
        while True:
            answer = self.request("GET", "/api/projects?page=%d&page_size=100" % page, what="projects")
            if isinstance(answer, list):  # older servers answer a plain list
                return answer
            projects.extend(answer.get("results") or [])
            if not answer.get("next"):
                return projects
            page += 1

    def find_project(self, project) -> dict | None:
        """A project by id (int or digits) or by exact title; None when there is none."""
        if isinstance(project, int) or (isinstance(project, str) and project.isdigit()):
            try:
                return self.request("GET", "/api/projects/%d" % int(project), what="project %s" % project)
            except LabelStudioError as exc:
                if "answered 404" in str(exc):
                    return None
                raise
        matches = [p for p in self.list_projects() if p.get("title") == project]
        if len(matches) > 1:
            raise LabelStudioError(
                "Label Studio at %s has %d projects titled %r: use the project id"
                % (self.url, len(matches), project)
            )
        return matches[0] if matches else None

    def require_project(self, project) -> dict:
        found = self.find_project(project)
        if found is None:
            raise LabelStudioError("Label Studio at %s has no project %r" % (self.url, project))
        return found

    def export_tasks(self, project_id: int) -> list:
        """Every task of a project with its annotations (Label Studio's JSON export)."""
        query = urlencode({"exportType": "JSON", "download_all_tasks": "true"})
        answer = self.request("GET", "/api/projects/%d/export?%s" % (project_id, query), what="the export")
        return answer or []

    def project_url(self, project_id: int) -> str:
        return "%s/projects/%d/" % (self.url, project_id)


def credentials_fingerprint(access_key: str | None, secret_key: str | None) -> str:
    """A short one-way fingerprint of S3 credentials.

    Label Studio never returns stored credentials, so the fingerprint goes into the storage's
    description to tell whether they changed; 48 bits of SHA-256 reveal nothing of the secret.
    """
    if not access_key and not secret_key:
        return "none"
    digest = hashlib.sha256(("%s:%s" % (access_key or "", secret_key or "")).encode("utf-8")).hexdigest()
    return digest[:12]


def storage_payload(spec: dict, kind: str, project_id: int, title: str) -> dict:
    """The API body for an S3 import (``kind="source"``) or export (``"target"``) storage."""
    payload = {
        "project": project_id,
        "title": title,
        "bucket": spec["bucket"],
        "prefix": (spec.get("prefix") or "").strip("/"),
        "regex_filter": spec.get("regex_filter") or "",
        "use_blob_urls": bool(spec.get("use_blob_urls", True)),
        "s3_endpoint": spec.get("endpoint_url") or "",
        "region_name": spec.get("region") or "",
        "description": "Managed by ailab.platform; credentials %s"
        % credentials_fingerprint(spec.get("access_key"), spec.get("secret_key")),
    }
    if kind == "source":
        payload["presign"] = bool(spec.get("presign", True))
        payload["presign_ttl"] = int(spec.get("presign_ttl") or 15)
        payload["recursive_scan"] = bool(spec.get("recursive_scan", True))
    else:
        payload["can_delete_objects"] = bool(spec.get("can_delete_objects", False))
    if spec.get("access_key"):
        payload["aws_access_key_id"] = spec["access_key"]
    if spec.get("secret_key"):
        payload["aws_secret_access_key"] = spec["secret_key"]
    return payload


def storage_differences(existing: dict, payload: dict) -> list[str]:
    """Names of the fields whose stored value differs from the payload (credentials by fingerprint)."""
    fields = S3_COMPARED_FIELDS + S3_IMPORT_ONLY_FIELDS + S3_EXPORT_ONLY_FIELDS + ("description",)
    changed = []
    for field in fields:
        if field not in payload:
            continue
        have = existing.get(field)
        want = payload[field]
        if isinstance(want, str) and not want and have is None:
            continue
        if have != want:
            changed.append(field)
    return changed


def ensure_storage(
    client: LabelStudioClient, project_id: int, spec: dict, kind: str, check_mode: bool
) -> dict:
    """Create or update the project's S3 storage of one kind, matched by its title.

    Returns ``{"id", "changed", "created", "fields"}``.
    """
    title = spec.get("title") or ("ailab-%s" % kind)
    payload = storage_payload(spec, kind, project_id, title)
    label = "the %s storage s3://%s/%s" % (kind, payload["bucket"], payload["prefix"])
    existing = [
        s
        for s in client.request("GET", "%s?project=%d" % (STORAGE_LIST[kind], project_id), what="storages")
        or []
        if s.get("title") == title
    ]
    if not existing:
        if check_mode:
            return {"id": None, "changed": True, "created": True, "fields": sorted(payload)}
        created = client.request("POST", STORAGE_LIST[kind], payload, what=label)
        return {"id": created["id"], "changed": True, "created": True, "fields": sorted(payload)}
    storage = existing[0]
    differences = storage_differences(storage, payload)
    if not differences:
        return {"id": storage["id"], "changed": False, "created": False, "fields": []}
    if not check_mode:
        client.request("PATCH", STORAGE_ITEM[kind] % storage["id"], payload, what=label)
    return {"id": storage["id"], "changed": True, "created": False, "fields": differences}


def sync_storage(client: LabelStudioClient, storage_id: int, kind: str, wait_s: int = 300) -> dict:
    """Run a storage sync and wait (bounded) for it to finish; return the storage as stored."""
    client.request("POST", (STORAGE_ITEM[kind] + "/sync") % storage_id, what="the %s storage sync" % kind)
    deadline = time.monotonic() + wait_s
    while True:
        storage = client.request("GET", STORAGE_ITEM[kind] % storage_id, what="storage %d" % storage_id)
        status = storage.get("status")
        if status == "completed":
            return storage
        if status == "failed":
            raise LabelStudioError(
                "Label Studio failed to sync the %s storage %d: %s"
                % (kind, storage_id, (storage.get("traceback") or "no detail").strip().splitlines()[-1])
            )
        if time.monotonic() > deadline:
            raise LabelStudioError(
                "The %s storage %d did not finish syncing in %d s" % (kind, storage_id, wait_s)
            )
        time.sleep(1)
