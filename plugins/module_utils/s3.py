# Copyright: ailab maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""boto3 helpers shared by the modules: one client per endpoint, errors worded for users."""

from __future__ import annotations

import traceback

try:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    HAS_BOTO3 = True
    BOTO3_IMPORT_ERROR = None
except ImportError:
    HAS_BOTO3 = False
    BOTO3_IMPORT_ERROR = traceback.format_exc()

# Options of modules that talk to S3 themselves; documented in each module.
S3_ARGSPEC = {
    "endpoint_url": {"type": "str"},
    "access_key": {"type": "str", "no_log": True},
    "secret_key": {"type": "str", "no_log": True},
    "region": {"type": "str", "default": "us-east-1"},
}


class S3Error(Exception):
    """An S3 call that failed; the message is meant for the user."""


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``."""
    if not url.startswith("s3://"):
        raise S3Error("not an s3:// URL: %r" % (url,))
    bucket, _sep, key = url[len("s3://") :].partition("/")
    if not bucket:
        raise S3Error("s3 URL has no bucket: %r" % (url,))
    return bucket, key


class S3:
    """A thin wrapper over a boto3 client that names the endpoint and object in every error."""

    def __init__(self, endpoint_url=None, access_key=None, secret_key=None, region="us-east-1", timeout=60):
        if not HAS_BOTO3:
            raise S3Error("boto3 is required")
        self.endpoint = endpoint_url or "AWS S3"
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url or None,
            aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None,
            region_name=region or None,
            # Path-style works with MinIO and moto as well as AWS; bounded retries keep failures quick.
            config=Config(
                s3={"addressing_style": "path"},
                connect_timeout=timeout,
                read_timeout=timeout,
                retries={"max_attempts": 2, "mode": "standard"},
            ),
        )

    def _fail(self, exc: Exception, what: str) -> S3Error:
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchBucket",):
                return S3Error("S3 bucket of %s does not exist at %s" % (what, self.endpoint))
            if code in ("NoSuchKey", "404"):
                return S3Error("%s does not exist at %s" % (what, self.endpoint))
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
                return S3Error(
                    "S3 at %s refused access to %s (%s): check the keys" % (self.endpoint, what, code)
                )
            return S3Error("S3 at %s failed on %s: %s" % (self.endpoint, what, exc))
        return S3Error("Cannot reach S3 at %s for %s: %s" % (self.endpoint, what, exc))

    def check_bucket(self, bucket: str) -> None:
        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchBucket"):
                raise S3Error("S3 bucket %r does not exist at %s" % (bucket, self.endpoint)) from None
            raise self._fail(exc, "bucket %r" % bucket) from None
        except BotoCoreError as exc:
            raise self._fail(exc, "bucket %r" % bucket) from None

    def get(self, bucket: str, key: str) -> bytes | None:
        """An object's bytes, or None when the key does not exist."""
        try:
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in ("NoSuchKey", "404"):
                return None
            raise self._fail(exc, "s3://%s/%s" % (bucket, key)) from None
        except BotoCoreError as exc:
            raise self._fail(exc, "s3://%s/%s" % (bucket, key)) from None

    def get_url(self, url: str) -> bytes:
        bucket, key = split_s3_url(url)
        content = self.get(bucket, key)
        if content is None:
            raise S3Error("%s does not exist at %s" % (url, self.endpoint))
        return content

    def exists(self, bucket: str, key: str) -> bool:
        try:
            self.client.head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in ("NoSuchKey", "404"):
                return False
            raise self._fail(exc, "s3://%s/%s" % (bucket, key)) from None
        except BotoCoreError as exc:
            raise self._fail(exc, "s3://%s/%s" % (bucket, key)) from None

    def put(self, bucket: str, key: str, content: bytes) -> None:
        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=content)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "s3://%s/%s" % (bucket, key)) from None

    def delete(self, bucket: str, key: str) -> None:
        try:
            self.client.delete_object(Bucket=bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "s3://%s/%s" % (bucket, key)) from None
