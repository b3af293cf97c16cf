"""S3 and S3-compatible driver (boto3).

The SDK's conventions apply: ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) for
MinIO, R2, moto and friends; the standard credential chain and ``AWS_REGION``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping, Optional

import boto3
import botocore.exceptions
from botocore.config import Config

from gcs_sync.errors import (
    BucketNotFound,
    ObjectChanged,
    ObjectExists,
    ObjectNotFound,
    StorageError,
    StoragePermissionDenied,
    StorageUnavailable,
)
from gcs_sync.drivers.base import MARKER_NAME, SHA256_KEY, UPLOAD_TOKEN_KEY, FileStoreDriver, RemoteObject, served_sha256

_CHUNK = 1 << 20
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
_DENIED_CODES = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
_PRECONDITION_CODES = {"PreconditionFailed", "412"}
# No credentials, or a credentials or config file that can't be used.
_CREDENTIAL_ERRORS = (
    botocore.exceptions.NoCredentialsError,
    botocore.exceptions.PartialCredentialsError,
    botocore.exceptions.ConfigParseError,
    botocore.exceptions.ProfileNotFound,
)


def _translate(operation: str, key: str, exc: Exception, missing: type[StorageError]) -> StorageError:
    cause = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, botocore.exceptions.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code == "NoSuchBucket":
            return BucketNotFound(operation, key, cause)
        if code in _MISSING_CODES:
            return missing(operation, key, cause)
        if code in _PRECONDITION_CODES:
            return ObjectExists(operation, key, cause)
        if code in _DENIED_CODES:
            return StoragePermissionDenied(operation, key, cause)
        # ConditionalRequestConflict (409): a concurrent conditional write; worth a retry.
        if status >= 500 or status == 429 or code in {
            "SlowDown", "Throttling", "TooManyRequests", "RequestTimeout", "ConditionalRequestConflict",
        }:
            return StorageUnavailable(operation, key, cause)
        return StorageError(operation, key, cause)
    if isinstance(exc, _CREDENTIAL_ERRORS):
        return StoragePermissionDenied(operation, key, cause)
    if isinstance(exc, botocore.exceptions.ParamValidationError):
        return StorageError(operation, key, cause)  # a malformed name: retrying won't help
    return StorageUnavailable(operation, key, cause)



_SDK_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError)


def _etag_is_md5(reply: Mapping[str, Any]) -> bool:
    """S3's ETag is the MD5 of the bytes except for multipart uploads and SSE-KMS/SSE-C."""
    return (
        "-" not in reply["ETag"]
        and reply.get("ServerSideEncryption") not in ("aws:kms", "aws:kms:dsse")
        and "SSECustomerAlgorithm" not in reply
    )


def _client(timeout: float, attempts: int) -> Any:
    return boto3.client("s3", config=Config(
        connect_timeout=timeout / 2,
        read_timeout=timeout / 2,
        retries={"mode": "standard", "total_max_attempts": attempts},
        # Presigned URLs and most S3-compatible stores want SigV4.
        signature_version="s3v4",
    ))


class S3Driver(FileStoreDriver):
    def __init__(self, bucket_name: str, prefix: str, timeout: float, client: Optional[Any] = None) -> None:
        super().__init__(prefix)
        self._bucket = bucket_name
        self.url = f"s3://{bucket_name}/{self._prefix}"
        try:
            # boto3 reads the credentials and config files here.
            # Two attempts of half the budget each: a failing call gives up after about
            # STORAGE_TIMEOUT, not boto3's default of 3 x 60 s. (botocore's "max_attempts"
            # counts retries, not attempts: 2 of them made 3 attempts, 1.5 budgets.)
            self._client = client or _client(timeout, attempts=2)
            # For the one look after a failed write, which has used the budget already.
            self._client_once = client or _client(timeout, attempts=1)
        except botocore.exceptions.BotoCoreError as exc:
            raise _translate("connect", self.url, exc, BucketNotFound) from exc

    def list_objects(self) -> dict[str, RemoteObject]:
        found: dict[str, RemoteObject] = {}
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=self._prefix, Delimiter="/"
            )
            for page in pages:
                self._count("list")
                for entry in page.get("Contents", []):
                    name = entry["Key"][len(self._prefix):]
                    if name:
                        found[name] = RemoteObject(name, entry["ETag"], entry["Size"])
        except _SDK_ERRORS as exc:
            raise _translate("list", self.url, exc, BucketNotFound) from exc
        return found

    def check_bucket(self) -> None:
        self._count("check")
        try:
            self._client.list_objects_v2(Bucket=self._bucket, Prefix=self._prefix, MaxKeys=1)
        except _SDK_ERRORS as exc:
            raise _translate("list", self.url, exc, BucketNotFound) from exc

    def stat(self, name: str) -> Optional[RemoteObject]:
        return self._stat(name, self._client)

    def _stat(self, name: str, client: Any) -> Optional[RemoteObject]:
        key = self._key(name)
        self._count("stat")
        try:
            head = client.head_object(Bucket=self._bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in _MISSING_CODES:
                return None
            raise _translate("stat", key, exc, ObjectNotFound) from exc
        except _SDK_ERRORS as exc:
            raise _translate("stat", key, exc, ObjectNotFound) from exc
        metadata = head.get("Metadata", {})
        return RemoteObject(name, head["ETag"], head["ContentLength"], metadata.get(SHA256_KEY),
                            metadata.get(UPLOAD_TOKEN_KEY))

    def download(self, name: str, destination: Path, version: str, listed_sha256: Optional[str] = None) -> str:
        key = self._key(name)
        self._count("download")
        try:
            # IfMatch: the bytes must be the version we listed.
            reply = self._client.get_object(Bucket=self._bucket, Key=key, IfMatch=version)
            md5, sha256 = hashlib.md5(), hashlib.sha256()
            written = 0
            with open(destination, "wb") as out:
                for chunk in iter(lambda: reply["Body"].read(_CHUNK), b""):
                    md5.update(chunk)
                    sha256.update(chunk)
                    out.write(chunk)
                    written += len(chunk)
        except botocore.exceptions.ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in _PRECONDITION_CODES:
                raise ObjectChanged("download", key, f"changed since it was listed: {exc}") from exc
            raise _translate("download", key, exc, ObjectNotFound) from exc
        except _SDK_ERRORS as exc:
            raise _translate("download", key, exc, ObjectNotFound) from exc
        # A cut connection can end the body early without an error (boto3 does not retry it).
        if written != reply["ContentLength"]:
            raise StorageUnavailable("download", key, f"body truncated at {written} of {reply['ContentLength']} bytes")
        # The bytes are checked against what S3 itself vouches for: the length, the MD5
        # ETag where it is one, and botocore's own CRC check where the object has one.
        # The sha256 metadata is only a claim (another tool may have rewritten the object
        # and kept it): the digest served is that of the bytes.
        if _etag_is_md5(reply) and md5.hexdigest() != reply["ETag"].strip('"'):
            raise StorageUnavailable("download", key, "content does not match its ETag (MD5)")
        return served_sha256(key, sha256.hexdigest(), reply.get("Metadata", {}).get(SHA256_KEY))

    def _write(
        self, name: str, source: Path, *, create_only: bool, if_version: Optional[str], metadata: Mapping[str, str],
    ) -> RemoteObject:
        key = self._key(name)
        extra = {"IfNoneMatch": "*"} if create_only else {} if if_version is None else {"IfMatch": if_version}
        self._count("upload")
        try:
            with open(source, "rb") as body:
                reply = self._client.put_object(Bucket=self._bucket, Key=key, Body=body, Metadata=dict(metadata),
                                                **extra)
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            # If-Match on a replaced object is a 412; on a deleted one, a 404.
            if if_version is not None and code in _MISSING_CODES | _PRECONDITION_CODES:
                raise ObjectChanged("upload", key, "replaced or deleted since it was read") from exc
            if code in _PRECONDITION_CODES:
                raise ObjectExists("upload", key, "an object of this name is already in the bucket") from exc
            raise _translate("upload", key, exc, BucketNotFound) from exc
        except _SDK_ERRORS as exc:
            raise _translate("upload", key, exc, BucketNotFound) from exc
        return RemoteObject(name, reply["ETag"], source.stat().st_size)

    def look_once(self, name: str, sha256: Optional[str]) -> Optional[RemoteObject]:
        try:
            return self._stat(name, self._client_once)
        except StorageError:
            return None  # can't tell: the caller reports the original failure

    def delete(self, name: str, if_version: Optional[str] = None) -> None:
        key = self._key(name)
        extra = {} if if_version is None else {"IfMatch": if_version}
        self._count("delete")
        try:
            self._client.delete_object(Bucket=self._bucket, Key=key, **extra)  # idempotent
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if code in _PRECONDITION_CODES:
                raise ObjectChanged("delete", key, f"replaced since it was listed: {exc}") from exc
            if if_version is not None and code in _MISSING_CODES:
                return  # already gone
            raise _translate("delete", key, exc, ObjectNotFound) from exc
        except _SDK_ERRORS as exc:
            raise _translate("delete", key, exc, ObjectNotFound) from exc

    def put_note(self, name: str, data: bytes, if_version: Optional[str] = None) -> str:
        key = self._key(name)
        extra = {} if if_version is None else {"IfMatch": if_version}
        self._count("upload")
        try:
            reply = self._client.put_object(Bucket=self._bucket, Key=key, Body=data, ContentType="application/json",
                                            **extra)
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if if_version is not None and (code in _PRECONDITION_CODES or code in _MISSING_CODES):
                raise ObjectChanged("upload", key, "replaced or deleted since it was read") from exc
            raise _translate("upload", key, exc, BucketNotFound) from exc
        except _SDK_ERRORS as exc:
            raise _translate("upload", key, exc, BucketNotFound) from exc
        return str(reply["ETag"])

    def read_note(self, name: str) -> Optional[bytes]:
        key = self._key(name)
        self._count("download")
        try:
            return self._client.get_object(Bucket=self._bucket, Key=key)["Body"].read()
        except botocore.exceptions.ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in _MISSING_CODES:
                return None
            raise _translate("download", key, exc, ObjectNotFound) from exc
        except _SDK_ERRORS as exc:
            raise _translate("download", key, exc, ObjectNotFound) from exc

    def list_notes(self, folder: str) -> list[str]:
        found = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=self._key(folder), Delimiter="/"
            )
            for page in pages:
                self._count("list")
                found.extend(entry["Key"][len(self._prefix):] for entry in page.get("Contents", []))
        except _SDK_ERRORS as exc:
            raise _translate("list", self._key(folder), exc, BucketNotFound) from exc
        return found

    def touch_marker(self) -> None:
        key = self._key(MARKER_NAME)
        self._count("upload")
        try:
            self._client.put_object(Bucket=self._bucket, Key=key, Body=self.new_marker_content())
        except _SDK_ERRORS as exc:
            raise _translate("upload", key, exc, BucketNotFound) from exc
