"""Google Cloud Storage driver (google-cloud-storage).

The SDK's own conventions apply: ``STORAGE_EMULATOR_HOST`` for the emulator, Application
Default Credentials otherwise. ``client.bucket()`` makes no API call, so object-level
roles (Storage Object Admin) are enough; ``get_bucket()`` would need bucket metadata reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

import google.auth.exceptions
import requests
from google.api_core import exceptions as gexc
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption, InvalidResponse
from google.cloud.storage.retry import DEFAULT_RETRY

from gcs_sync.errors import (
    BucketNotFound,
    ObjectChanged,
    ObjectExists,
    ObjectNotFound,
    StorageError,
    StoragePermissionDenied,
    StorageUnavailable,
)
from gcs_sync.files import sha256_of
from gcs_sync.drivers.base import MARKER_NAME, SHA256_KEY, UPLOAD_TOKEN_KEY, FileStoreDriver, RemoteObject, served_sha256

_UNAVAILABLE = (
    DataCorruption,  # checksum mismatch on download: a transfer fault, try again later
    InvalidResponse,
    gexc.RetryError,
    gexc.ServerError,
    gexc.TooManyRequests,
    requests.exceptions.RequestException,
    google.auth.exceptions.TransportError,
    ConnectionError,
    TimeoutError,
)


def _translate(operation: str, key: str, exc: Exception, missing: type[StorageError]) -> StorageError:
    cause = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, gexc.NotFound):
        return missing(operation, key, cause)
    if isinstance(exc, gexc.PreconditionFailed):
        return ObjectExists(operation, key, cause)
    if isinstance(exc, (gexc.Forbidden, gexc.Unauthorized, google.auth.exceptions.DefaultCredentialsError)):
        return StoragePermissionDenied(operation, key, cause)
    if isinstance(exc, _UNAVAILABLE):
        return StorageUnavailable(operation, key, cause)
    return StorageError(operation, key, cause)


def _remote(name: str, blob: storage.Blob) -> RemoteObject:
    metadata = blob.metadata or {}
    return RemoteObject(name, str(blob.generation), blob.size or 0, metadata.get(SHA256_KEY),
                        metadata.get(UPLOAD_TOKEN_KEY))


# What _translate understands; anything else is a bug and should surface as one.
_SDK_ERRORS = (gexc.GoogleAPICallError, google.auth.exceptions.GoogleAuthError) + _UNAVAILABLE


class GCSDriver(FileStoreDriver):
    def __init__(
        self,
        bucket_name: str,
        prefix: str,
        timeout: float,
        client: Optional[storage.Client] = None,
    ) -> None:
        super().__init__(prefix)
        self.url = f"gs://{bucket_name}/{self._prefix}"
        try:
            self._client = client or storage.Client()
        except (google.auth.exceptions.GoogleAuthError, OSError) as exc:
            # GOOGLE_APPLICATION_CREDENTIALS names a missing, unreadable or malformed file,
            # or there are no Application Default Credentials at all.
            raise StoragePermissionDenied(
                "connect", self.url, f"cannot load the credentials: {type(exc).__name__}: {exc}"
            ) from exc
        self._bucket = self._client.bucket(bucket_name)
        # Each attempt gets half the budget and retries stop at the budget, instead of the
        # SDK's 60 s per attempt and 120 s of retries; a request must never wait that long.
        # The first backoff stays under a tenth of the budget (the SDK's is up to 1 s), so
        # an attempt that timed out still leaves room for its retry within the budget.
        self._timeout = timeout / 2
        self._retry = DEFAULT_RETRY.with_timeout(timeout).with_delay(
            initial=min(1.0, timeout / 10), maximum=timeout / 2
        )

    def list_objects(self) -> dict[str, RemoteObject]:
        found: dict[str, RemoteObject] = {}
        try:
            blobs = self._client.list_blobs(
                self._bucket, prefix=self._prefix, delimiter="/",
                retry=self._retry, timeout=self._timeout,
            )
            for page in blobs.pages:
                self._count("list")
                for blob in page:
                    name = blob.name[len(self._prefix):]
                    if name:  # the prefix's own folder placeholder has an empty name
                        found[name] = RemoteObject(
                            name, str(blob.generation), blob.size or 0,
                            (blob.metadata or {}).get(SHA256_KEY),
                        )
        except _SDK_ERRORS as exc:
            raise _translate("list", self.url, exc, BucketNotFound) from exc
        return found

    def check_bucket(self) -> None:
        self._count("check")
        try:
            # One page of at most one object (a missing bucket is a 404; get_blob would
            # not tell it from a missing object).
            list(self._client.list_blobs(
                self._bucket, prefix=self._prefix, max_results=1, retry=self._retry, timeout=self._timeout,
            ))
        except _SDK_ERRORS as exc:
            raise _translate("list", self.url, exc, BucketNotFound) from exc

    def stat(self, name: str) -> Optional[RemoteObject]:
        key = self._key(name)
        self._count("stat")
        try:
            blob = self._bucket.get_blob(key, retry=self._retry, timeout=self._timeout)
        except _SDK_ERRORS as exc:
            raise _translate("stat", key, exc, ObjectNotFound) from exc
        return None if blob is None else _remote(name, blob)

    def download(self, name: str, destination: Path, version: str, listed_sha256: Optional[str] = None) -> str:
        key = self._key(name)
        blob = self._bucket.blob(key)
        self._count("download")
        try:
            # The generation precondition makes sure the bytes are the version we listed;
            # the SDK checks them against the object's crc32c (or md5).
            blob.download_to_filename(
                str(destination), if_generation_match=int(version),
                retry=self._retry, timeout=self._timeout,
            )
        except gexc.PreconditionFailed as exc:
            raise ObjectChanged("download", key, f"changed since it was listed: {exc}") from exc
        except _SDK_ERRORS as exc:
            raise _translate("download", key, exc, ObjectNotFound) from exc
        # The SDK checked the bytes against the object's crc32c (or md5), so they are the
        # object's. Its sha256 metadata is only a claim (another tool may have rewritten
        # the object and kept it): the digest served is that of the bytes on disk.
        return served_sha256(key, sha256_of(destination), listed_sha256)

    def _write(
        self, name: str, source: Path, *, create_only: bool, if_version: Optional[str], metadata: Mapping[str, str],
    ) -> RemoteObject:
        key = self._key(name)
        blob = self._bucket.blob(key)
        blob.metadata = dict(metadata)
        # Generation 0: only if there is no object; a generation: only over that one.
        generation = 0 if create_only else None if if_version is None else int(if_version)
        self._count("upload")
        try:
            blob.upload_from_filename(
                str(source), if_generation_match=generation, retry=self._retry, timeout=self._timeout,
            )
        except gexc.PreconditionFailed as exc:
            if if_version is not None:
                raise ObjectChanged("upload", key, "replaced or deleted since it was read") from exc
            raise ObjectExists("upload", key, "an object of this name is already in the bucket") from exc
        except _SDK_ERRORS as exc:
            raise _translate("upload", key, exc, BucketNotFound) from exc
        return RemoteObject(name, str(blob.generation), blob.size or 0)

    def look_once(self, name: str, sha256: Optional[str]) -> Optional[RemoteObject]:
        self._count("stat")
        try:
            # One attempt: the upload has already used its retry budget.
            blob = self._bucket.get_blob(self._key(name), retry=None, timeout=self._timeout)
        except _SDK_ERRORS:
            return None  # can't tell: the caller reports the original failure
        return None if blob is None else _remote(name, blob)

    def delete(self, name: str, if_version: Optional[str] = None) -> None:
        key = self._key(name)
        self._count("delete")
        try:
            self._bucket.blob(key).delete(
                if_generation_match=None if if_version is None else int(if_version),
                retry=self._retry, timeout=self._timeout,
            )
        except gexc.NotFound:
            return  # already gone: deletes are idempotent
        except gexc.PreconditionFailed as exc:
            raise ObjectChanged("delete", key, f"replaced since it was listed: {exc}") from exc
        except _SDK_ERRORS as exc:
            raise _translate("delete", key, exc, ObjectNotFound) from exc

    def put_note(self, name: str, data: bytes, if_version: Optional[str] = None) -> str:
        key = self._key(name)
        self._count("upload")
        blob = self._bucket.blob(key)
        try:
            blob.upload_from_string(
                data, content_type="application/json", retry=self._retry, timeout=self._timeout,
                if_generation_match=None if if_version is None else int(if_version),
            )
        except gexc.PreconditionFailed as exc:
            raise ObjectChanged("upload", key, "replaced or deleted since it was read") from exc
        except _SDK_ERRORS as exc:
            raise _translate("upload", key, exc, BucketNotFound) from exc
        return str(blob.generation)

    def read_note(self, name: str) -> Optional[bytes]:
        key = self._key(name)
        self._count("download")
        try:
            return self._bucket.blob(key).download_as_bytes(retry=self._retry, timeout=self._timeout)
        except gexc.NotFound:
            return None
        except _SDK_ERRORS as exc:
            raise _translate("download", key, exc, ObjectNotFound) from exc

    def list_notes(self, folder: str) -> list[str]:
        found = []
        try:
            blobs = self._client.list_blobs(
                self._bucket, prefix=self._key(folder), delimiter="/", retry=self._retry, timeout=self._timeout,
            )
            for page in blobs.pages:
                self._count("list")
                found.extend(blob.name[len(self._prefix):] for blob in page)
        except _SDK_ERRORS as exc:
            raise _translate("list", self._key(folder), exc, BucketNotFound) from exc
        return found

    def touch_marker(self) -> None:
        key = self._key(MARKER_NAME)
        self._count("upload")
        try:
            # An unconditional write is safe to retry: any new generation does.
            self._bucket.blob(key).upload_from_string(
                self.new_marker_content(), content_type="text/plain",
                retry=self._retry, timeout=self._timeout,
            )
        except _SDK_ERRORS as exc:
            raise _translate("upload", key, exc, BucketNotFound) from exc
