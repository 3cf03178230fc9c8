"""Storage payloads and client argument checks (plugins/module_utils/label_studio.py)."""

import pytest
from ansible_collections.ailab.platform.plugins.module_utils.label_studio import (
    LabelStudioClient,
    LabelStudioError,
    credentials_fingerprint,
    storage_differences,
    storage_payload,
)

SPEC = {
    "bucket": "lab",
    "prefix": "/raw/",
    "endpoint_url": "http://s3:9000",
    "access_key": "AK",
    "secret_key": "SK",
}


def test_source_payload_has_presign_and_credentials_fingerprint():
    payload = storage_payload(SPEC, "source", 3, "ailab-source")
    assert payload["prefix"] == "raw"
    assert payload["presign"] is True and payload["use_blob_urls"] is True
    assert payload["aws_secret_access_key"] == "SK"
    assert credentials_fingerprint("AK", "SK") in payload["description"]
    assert "SK" not in payload["description"]
    assert "can_delete_objects" not in payload
    assert "presign" not in storage_payload(SPEC, "target", 3, "ailab-target")


def test_stored_storage_without_secrets_compares_equal():
    payload = storage_payload(SPEC, "source", 3, "ailab-source")
    stored = {k: v for k, v in payload.items() if not k.startswith("aws_")}
    stored["regex_filter"] = None if not payload["regex_filter"] else payload["regex_filter"]
    assert storage_differences(stored, payload) == []
    changed = storage_payload(dict(SPEC, secret_key="new"), "source", 3, "ailab-source")
    assert storage_differences(stored, changed) == ["description"]
    assert storage_differences(stored, dict(payload, prefix="other")) == ["prefix"]


def test_fingerprint_is_short_and_depends_on_both_keys():
    assert credentials_fingerprint(None, None) == "none"
    assert len(credentials_fingerprint("a", "b")) == 12
    assert credentials_fingerprint("a", "b") != credentials_fingerprint("a", "c")


def test_client_needs_a_scheme():
    with pytest.raises(LabelStudioError, match="must start with http"):
        LabelStudioClient("labelstudio:8080", "t")
    assert LabelStudioClient("http://ls:8080/", "t").project_url(4) == "http://ls:8080/projects/4/"
