"""S3 and S3-compatible driver (boto3).

The SDK's conventions apply: ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) for
MinIO, R2, moto and friends; the standard credential chain and ``AWS_REGION``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from pathlib import Path
from typing import Any, Iterator, Mapping, NewType, Optional

import boto3
import botocore.exceptions
from botocore.config import Config

from gcs_sync.drivers.base import (
    BUCKET,
    CREATE,
    DELETE,
    READ,
    REPLACE,
    SHA256_KEY,
    STREAM_CHUNK,
    UPLOAD_TOKEN_KEY,
    ErrorKind,
    Failure,
    FileStoreDriver,
    RemoteObject,
    Version,
    mapped_errors,
    served_sha256,
)
from gcs_sync.errors import (
    BucketNotFound,
    ObjectNotFound,
    SigningUnavailable,
    StorageError,
    StoragePermissionDenied,
    StorageUnavailable,
)

# An object's ETag, quotes and all, as a Version (S3 gives a new one to every write of
# other bytes; the MD5 of the bytes for most, so equal bytes give equal ETags).
ETag = NewType("ETag", Version)

_CHUNK = 1 << 20

# The error codes S3 (and S3-compatible stores) answer with, and what each is. A HEAD has
# no body, so its code is the HTTP status.
_ERROR_CODES: dict[str, ErrorKind] = {
    "NoSuchBucket": BucketNotFound,
    **dict.fromkeys(("NoSuchKey", "404", "NotFound"), Failure.MISSING),
    **dict.fromkeys(("PreconditionFailed", "412"), Failure.PRECONDITION),
    **dict.fromkeys(
        ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"), StoragePermissionDenied,
    ),
    # ConditionalRequestConflict (409): a concurrent conditional write; worth a retry.
    **dict.fromkeys(
        ("SlowDown", "Throttling", "TooManyRequests", "RequestTimeout", "ConditionalRequestConflict"),
        StorageUnavailable,
    ),
}
# The errors botocore raises before or without an answer, the first match winning; any
# other (a connection or read error, a timeout) is StorageUnavailable.
_ERRORS: tuple[tuple[tuple[type[BaseException], ...], ErrorKind], ...] = (
    # No credentials, or a credentials or config file that can't be used.
    ((
        botocore.exceptions.NoCredentialsError,
        botocore.exceptions.PartialCredentialsError,
        botocore.exceptions.ConfigParseError,
        botocore.exceptions.ProfileNotFound,
    ), StoragePermissionDenied),
    ((botocore.exceptions.ParamValidationError,), StorageError),  # a malformed name: retrying won't help
)

_SDK_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError)


def _error_kind(exc: BaseException) -> ErrorKind:
    """The one place the SDK's errors are sorted into ours."""
    if isinstance(exc, botocore.exceptions.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        default = StorageUnavailable if status >= 500 or status == 429 else StorageError
        return _ERROR_CODES.get(str(exc.response.get("Error", {}).get("Code", "")), default)
    return next((kind for sdk_errors, kind in _ERRORS if isinstance(exc, sdk_errors)), StorageUnavailable)


_mapped = functools.partial(mapped_errors, _SDK_ERRORS, _error_kind)


def _etag_is_md5(reply: Mapping[str, Any]) -> bool:
    """S3's ETag is the MD5 of the bytes except for multipart uploads and SSE-KMS/SSE-C."""
    return (
        "-" not in reply["ETag"]
        and reply.get("ServerSideEncryption") not in ("aws:kms", "aws:kms:dsse")
        and "SSECustomerAlgorithm" not in reply
    )


def _condition(create_only: bool, if_version: Optional[Version]) -> dict[str, str]:
    """The request's precondition: only if there is no such object, or only over that version."""
    return {"IfNoneMatch": "*"} if create_only else {} if if_version is None else {"IfMatch": if_version}


def _modified(entry: Mapping[str, Any]) -> Optional[float]:
    """A listing entry's or a HEAD reply's LastModified, in seconds since the epoch."""
    when = entry.get("LastModified")
    return None if when is None else float(when.timestamp())


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
        with _mapped("connect", self.url, BUCKET):
            # boto3 reads the credentials and config files here.
            # Two attempts of half the budget each: a failing call gives up after about
            # STORAGE_TIMEOUT, not boto3's default of 3 x 60 s. (botocore's "max_attempts"
            # counts retries, not attempts: 2 of them made 3 attempts, 1.5 budgets.)
            self._client = client or _client(timeout, attempts=2)
            # For the one look after a failed write, which has used the budget already.
            self._client_once = client or _client(timeout, attempts=1)

    def list_objects(self) -> dict[str, RemoteObject]:
        found: dict[str, RemoteObject] = {}
        with _mapped("list", self.url, BUCKET):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=self._prefix, Delimiter="/"
            )
            for page in pages:
                self._count("list")
                for entry in page.get("Contents", []):
                    name = entry["Key"][len(self._prefix):]
                    if name:
                        found[name] = RemoteObject(name, ETag(entry["ETag"]), entry["Size"], modified=_modified(entry))
        return found

    def check_bucket(self) -> None:
        self._count("check")
        with _mapped("list", self.url, BUCKET):
            self._client.list_objects_v2(Bucket=self._bucket, Prefix=self._prefix, MaxKeys=1)

    def stat(self, name: str) -> Optional[RemoteObject]:
        return self._stat(name, self._client)

    def _stat(self, name: str, client: Any) -> Optional[RemoteObject]:
        key = self._key(name)
        self._count("stat")
        try:
            with _mapped("stat", key, READ):
                head = client.head_object(Bucket=self._bucket, Key=key)
        except ObjectNotFound:
            return None
        metadata = head.get("Metadata", {})
        return RemoteObject(name, ETag(head["ETag"]), head["ContentLength"], metadata.get(SHA256_KEY),
                            metadata.get(UPLOAD_TOKEN_KEY), modified=_modified(head))

    def download(self, name: str, destination: Path, version: Version, listed_sha256: Optional[str] = None) -> str:
        key = self._key(name)
        self._count("download")
        with _mapped("download", key, READ):
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
        self, name: str, source: Path, *, create_only: bool, if_version: Optional[Version], metadata: Mapping[str, str],
    ) -> RemoteObject:
        key = self._key(name)
        self._count("upload")
        with _mapped("upload", key, CREATE if create_only else BUCKET if if_version is None else REPLACE):
            with open(source, "rb") as body:
                reply = self._client.put_object(Bucket=self._bucket, Key=key, Body=body, Metadata=dict(metadata),
                                                **_condition(create_only, if_version))
        return RemoteObject(name, ETag(reply["ETag"]), source.stat().st_size)

    def _stat_once(self, name: str) -> Optional[RemoteObject]:
        return self._stat(name, self._client_once)

    def delete(self, name: str, if_version: Optional[Version] = None) -> None:
        key = self._key(name)
        self._count("delete")
        try:
            with _mapped("delete", key, DELETE):
                self._client.delete_object(Bucket=self._bucket, Key=key, **_condition(False, if_version))
        except ObjectNotFound:
            return  # already gone (If-Match on a missing object): deletes are idempotent

    def put_note(self, name: str, data: bytes, if_version: Optional[Version] = None, create_only: bool = False) -> Version:
        key = self._key(name)
        self._count("upload")
        meaning = CREATE if create_only else BUCKET if if_version is None else REPLACE
        with _mapped("upload", key, meaning):
            reply = self._client.put_object(Bucket=self._bucket, Key=key, Body=data, ContentType="application/json",
                                            **_condition(create_only, if_version))
        return ETag(Version(str(reply["ETag"])))

    def read_note_versioned(self, name: str) -> Optional[tuple[bytes, Version]]:
        key = self._key(name)
        self._count("download")
        try:
            with _mapped("download", key, READ):
                reply = self._client.get_object(Bucket=self._bucket, Key=key)
                data: bytes = reply["Body"].read()
        except ObjectNotFound:
            return None
        # A cut connection can end the body early without an error (boto3 does not retry it).
        if len(data) != reply["ContentLength"]:
            raise StorageUnavailable("download", key, f"body truncated at {len(data)} of {reply['ContentLength']} bytes")
        return data, ETag(Version(str(reply["ETag"])))

    def list_note_versions(self, folder: str) -> dict[str, Version]:
        found: dict[str, Version] = {}
        with _mapped("list", self._key(folder), BUCKET):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=self._key(folder), Delimiter="/"
            )
            for page in pages:
                self._count("list")
                for entry in page.get("Contents", []):
                    found[entry["Key"][len(self._prefix):]] = ETag(Version(str(entry["ETag"])))
        return found

    def list_notes_after(self, folder: str, start_after: str) -> list[tuple[str, Optional[float]]]:
        found: list[tuple[str, Optional[float]]] = []
        with _mapped("list", self._key(folder), BUCKET):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=self._key(folder), Delimiter="/", StartAfter=self._key(start_after),
            )
            for page in pages:
                self._count("list")
                for entry in page.get("Contents", []):
                    modified = entry.get("LastModified")
                    found.append((entry["Key"][len(self._prefix):], None if modified is None else modified.timestamp()))
        return sorted(note for note in found if note[0] > start_after)

    @contextlib.contextmanager
    def open_stream(self, name: str, version: Version) -> Iterator[Iterator[bytes]]:
        key = self._key(name)
        self._count("download")
        with _mapped("download", key, READ):
            # IfMatch: the bytes must be that version (a 412 is ObjectChanged, a 404 gone).
            reply = self._client.get_object(Bucket=self._bucket, Key=key, IfMatch=version)
        try:
            yield self._chunks(key, reply)
        finally:
            reply["Body"].close()  # a stream left early must not keep its connection

    @staticmethod
    def _chunks(key: str, reply: Mapping[str, Any]) -> Iterator[bytes]:
        chunks = reply["Body"].iter_chunks(STREAM_CHUNK)
        md5 = hashlib.md5()
        read = 0
        while True:
            # A broken connection or a body shorter than its Content-Length (botocore
            # checks at the end) is StorageUnavailable, raised mid-stream.
            with _mapped("download", key, READ):
                chunk: bytes = next(chunks, b"")
            if not chunk:
                break
            md5.update(chunk)
            read += len(chunk)
            yield chunk
        if read != reply["ContentLength"]:
            raise StorageUnavailable("download", key, f"body truncated at {read} of {reply['ContentLength']} bytes")
        if _etag_is_md5(reply) and md5.hexdigest() != reply["ETag"].strip('"'):
            raise StorageUnavailable("download", key, "content does not match its ETag (MD5)")

    def signed_url(self, name: str, expires_seconds: int) -> str:
        # Presigning is local (SigV4 with the client's keys, no request): it fails only
        # without credentials. Whether those keys may read the object (s3:GetObject) only
        # the GET through the URL tells.
        key = self._key(name)
        try:
            url: str = self._client.generate_presigned_url(
                "get_object", Params={"Bucket": self._bucket, "Key": key}, ExpiresIn=expires_seconds,
            )
        except (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError) as exc:
            raise SigningUnavailable(
                "sign", key, f"the credentials are missing or incomplete, so no URL can be presigned: {exc}",
            ) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise SigningUnavailable("sign", key, f"cannot presign: {type(exc).__name__}: {exc}") from exc
        return url
