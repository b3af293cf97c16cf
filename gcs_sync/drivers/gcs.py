"""Google Cloud Storage driver (google-cloud-storage).

The SDK's own conventions apply: ``STORAGE_EMULATOR_HOST`` for the emulator, Application
Default Credentials otherwise. ``client.bucket()`` makes no API call, so object-level
roles (Storage Object Admin) are enough; ``get_bucket()`` would need bucket metadata reads.

Signed URLs (V4) are signed with a service-account key where the credentials carry one
(``GOOGLE_APPLICATION_CREDENTIALS=key.json``), else through the IAM credentials API's
signBlob as the runtime's service account (App Engine, Cloud Run, GCE: no key deployed),
which needs ``roles/iam.serviceAccountTokenCreator`` on that account. With the emulator
the storage client stays anonymous (a key there would make every call fetch a token) and
only signing uses the standard credentials; the URLs then point at the emulator.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import functools
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping, NewType, Optional

import google.auth
import google.auth.credentials
import google.auth.exceptions
import google.auth.transport.requests
import requests
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption, InvalidResponse
from google.cloud.storage.retry import DEFAULT_RETRY

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
    ObjectChanged,
    ObjectNotFound,
    SigningNotPermitted,
    SigningUnavailable,
    StorageError,
    StoragePermissionDenied,
    StorageUnavailable,
)
from gcs_sync.files import sha256_of

# An object's generation (a number GCS gives each write), as a Version.
Generation = NewType("Generation", Version)

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

# A streamed download asks for this much per request (each with the driver's retry and
# timeout, so a broken connection is retried from where it broke), handed over in
# STREAM_CHUNK pieces: a few requests per package file, a bounded amount in memory.
_STREAM_RANGE = 4 * STREAM_CHUNK

# The SDK's errors and what each is, the first match winning; anything else is a StorageError.
_ERRORS: tuple[tuple[tuple[type[BaseException], ...], ErrorKind], ...] = (
    ((gexc.NotFound,), Failure.MISSING),
    ((gexc.PreconditionFailed,), Failure.PRECONDITION),
    ((gexc.Forbidden, gexc.Unauthorized, google.auth.exceptions.DefaultCredentialsError), StoragePermissionDenied),
    (_UNAVAILABLE, StorageUnavailable),
)

# What the table understands; anything else is a bug and should surface as one.
_SDK_ERRORS = (gexc.GoogleAPICallError, google.auth.exceptions.GoogleAuthError) + _UNAVAILABLE

# GCS answers a generation precondition on a missing object with 412, so a 404 on a
# conditional write is the bucket's.
_REPLACE = dataclasses.replace(REPLACE, missing=BucketNotFound)


def _error_kind(exc: BaseException) -> ErrorKind:
    """The one place the SDK's errors are sorted into ours."""
    return next((kind for sdk_errors, kind in _ERRORS if isinstance(exc, sdk_errors)), StorageError)


_mapped = functools.partial(mapped_errors, _SDK_ERRORS, _error_kind)


def _generation(blob: storage.Blob) -> Generation:
    return Generation(Version(str(blob.generation)))


def _created(blob: storage.Blob) -> Optional[float]:
    return None if blob.time_created is None else blob.time_created.timestamp()


def _remote(name: str, blob: storage.Blob) -> RemoteObject:
    metadata = blob.metadata or {}
    return RemoteObject(name, _generation(blob), blob.size or 0, metadata.get(SHA256_KEY),
                        metadata.get(UPLOAD_TOKEN_KEY), modified=_created(blob))


# The role that lets an account sign as a service account (IAM signBlob), and where.
TOKEN_CREATOR_ROLE = "roles/iam.serviceAccountTokenCreator"
IAM_CREDENTIALS_ENDPOINT = "https://iamcredentials.googleapis.com"
_CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


class _IamSigner(google.auth.credentials.Signing):
    """Signs as service account ``email`` through the IAM credentials API's signBlob,
    with ``credentials``' token. Each call is bounded by ``timeout`` (the SDK's own
    signBlob call retries for up to two minutes without one) and a refusal says which
    role is missing. Raises StorageError kinds naming the account; ``signed_url`` names
    the object."""

    def __init__(self, credentials: google.auth.credentials.Credentials, email: str, timeout: float,
                 endpoint: str = IAM_CREDENTIALS_ENDPOINT) -> None:
        self._session = google.auth.transport.requests.AuthorizedSession(credentials)
        self._email = email
        self._timeout = timeout
        self._url = f"{endpoint}/v1/projects/-/serviceAccounts/{email}:signBlob"

    @property
    def signer_email(self) -> str:
        return self._email

    @property
    def signer(self) -> Any:
        return None  # no local key: sign_bytes asks IAM

    def sign_bytes(self, message: bytes) -> bytes:
        payload = {"payload": base64.b64encode(message).decode("ascii")}
        try:
            reply = self._session.post(self._url, json=payload, timeout=self._timeout)
        except google.auth.exceptions.RefreshError as exc:
            raise SigningUnavailable("sign as", self._email, f"the credentials' token cannot be had: {exc}") from exc
        except (requests.exceptions.RequestException, google.auth.exceptions.TransportError) as exc:
            raise StorageUnavailable("sign as", self._email, f"the IAM credentials API did not answer: {exc}") from exc
        if reply.status_code in (401, 403):
            raise SigningNotPermitted(
                "sign as", self._email,
                f"the IAM credentials API refused signBlob ({reply.status_code}): grant {TOKEN_CREATOR_ROLE} "
                f"on the service account {self._email} to the account the index runs as (on itself if it is "
                f"that account): {_short(reply.text)}",
            )
        if reply.status_code == 429 or reply.status_code >= 500:
            raise StorageUnavailable("sign as", self._email, f"IAM signBlob answered {reply.status_code}: {_short(reply.text)}")
        if reply.status_code != 200:
            raise SigningUnavailable("sign as", self._email, f"IAM signBlob answered {reply.status_code}: {_short(reply.text)}")
        try:
            return base64.b64decode(reply.json()["signedBlob"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageUnavailable("sign as", self._email, f"IAM signBlob gave no signature: {_short(reply.text)}") from exc


def _short(text: str) -> str:
    return " ".join(text.split())[:300]


class GCSDriver(FileStoreDriver):
    def __init__(
        self,
        bucket_name: str,
        prefix: str,
        timeout: float,
        client: Optional[storage.Client] = None,
        signing_account: Optional[str] = None,
        iam_endpoint: str = IAM_CREDENTIALS_ENDPOINT,
    ) -> None:
        super().__init__(prefix)
        # SIGNING_SERVICE_ACCOUNT; None: the credentials' own account.
        self._signing_account = signing_account
        self._iam_endpoint = iam_endpoint
        self._signer: Optional[google.auth.credentials.Signing] = None
        self._signer_lock = threading.Lock()
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
        with _mapped("list", self.url, BUCKET):
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
                            name, _generation(blob), blob.size or 0, (blob.metadata or {}).get(SHA256_KEY),
                            modified=_created(blob),
                        )
        return found

    def check_bucket(self) -> None:
        self._count("check")
        with _mapped("list", self.url, BUCKET):
            # One page of at most one object (a missing bucket is a 404; get_blob would
            # not tell it from a missing object).
            list(self._client.list_blobs(
                self._bucket, prefix=self._prefix, max_results=1, retry=self._retry, timeout=self._timeout,
            ))

    def stat(self, name: str) -> Optional[RemoteObject]:
        return self._stat(name, self._retry)

    def _stat(self, name: str, retry: Optional[Retry]) -> Optional[RemoteObject]:
        self._count("stat")
        with _mapped("stat", self._key(name), READ):
            blob = self._bucket.get_blob(self._key(name), retry=retry, timeout=self._timeout)
        return None if blob is None else _remote(name, blob)

    def download(self, name: str, destination: Path, version: Version, listed_sha256: Optional[str] = None) -> str:
        key = self._key(name)
        blob = self._bucket.blob(key)
        self._count("download")
        with _mapped("download", key, READ):
            # The generation precondition makes sure the bytes are the version we listed;
            # the SDK checks them against the object's crc32c (or md5).
            blob.download_to_filename(
                str(destination), if_generation_match=int(version),
                retry=self._retry, timeout=self._timeout,
            )
        # The SDK checked the bytes against the object's crc32c (or md5), so they are the
        # object's. Its sha256 metadata is only a claim (another tool may have rewritten
        # the object and kept it): the digest served is that of the bytes on disk.
        return served_sha256(key, sha256_of(destination), listed_sha256)

    def _write(
        self, name: str, source: Path, *, create_only: bool, if_version: Optional[Version], metadata: Mapping[str, str],
    ) -> RemoteObject:
        key = self._key(name)
        blob = self._bucket.blob(key)
        blob.metadata = dict(metadata)
        # Generation 0: only if there is no object; a generation: only over that one.
        generation = 0 if create_only else None if if_version is None else int(if_version)
        self._count("upload")
        with _mapped("upload", key, CREATE if create_only else BUCKET if if_version is None else _REPLACE):
            blob.upload_from_filename(
                str(source), if_generation_match=generation, retry=self._retry, timeout=self._timeout,
            )
        return RemoteObject(name, _generation(blob), blob.size or 0)

    def _stat_once(self, name: str) -> Optional[RemoteObject]:
        return self._stat(name, retry=None)

    def delete(self, name: str, if_version: Optional[Version] = None) -> None:
        key = self._key(name)
        self._count("delete")
        try:
            with _mapped("delete", key, DELETE):
                self._bucket.blob(key).delete(
                    if_generation_match=None if if_version is None else int(if_version),
                    retry=self._retry, timeout=self._timeout,
                )
        except ObjectNotFound:
            return  # already gone: deletes are idempotent

    def put_note(self, name: str, data: bytes, if_version: Optional[Version] = None, create_only: bool = False) -> Version:
        key = self._key(name)
        self._count("upload")
        blob = self._bucket.blob(key)
        generation = 0 if create_only else None if if_version is None else int(if_version)
        with _mapped("upload", key, CREATE if create_only else _REPLACE):
            blob.upload_from_string(
                data, content_type="application/json", retry=self._retry, timeout=self._timeout,
                if_generation_match=generation,
            )
        return _generation(blob)

    def read_note_versioned(self, name: str) -> Optional[tuple[bytes, Version]]:
        key = self._key(name)
        self._count("download")
        blob = self._bucket.blob(key)
        try:
            with _mapped("download", key, READ):
                data: bytes = blob.download_as_bytes(retry=self._retry, timeout=self._timeout)
        except ObjectNotFound:
            return None
        if blob.generation is not None:
            # The download's x-goog-generation header says which generation these bytes are.
            return data, _generation(blob)
        # A store that does not send the header (the emulator): read the generation, then
        # the bytes at that generation (again if it was replaced in between, a few times).
        for _ in range(3):
            listed = self.stat(name)
            if listed is None:
                return None
            self._count("download")
            try:
                with _mapped("download", key, READ):
                    data = blob.download_as_bytes(if_generation_match=int(listed.version),
                                                  retry=self._retry, timeout=self._timeout)
                return data, listed.version
            except (ObjectNotFound, ObjectChanged):
                continue
        raise ObjectChanged("download", key, "replaced again each time it was read")

    def list_note_versions(self, folder: str) -> dict[str, Version]:
        found: dict[str, Version] = {}
        with _mapped("list", self._key(folder), BUCKET):
            blobs = self._client.list_blobs(
                self._bucket, prefix=self._key(folder), delimiter="/", retry=self._retry, timeout=self._timeout,
            )
            for page in blobs.pages:
                self._count("list")
                for blob in page:
                    found[blob.name[len(self._prefix):]] = _generation(blob)
        return found

    def list_notes_after(self, folder: str, start_after: str) -> list[tuple[str, Optional[float]]]:
        found: list[tuple[str, Optional[float]]] = []
        with _mapped("list", self._key(folder), BUCKET):
            blobs = self._client.list_blobs(
                self._bucket, prefix=self._key(folder), delimiter="/", start_offset=self._key(start_after),
                retry=self._retry, timeout=self._timeout,
            )
            for page in blobs.pages:
                self._count("list")
                for blob in page:
                    name = blob.name[len(self._prefix):]
                    # start_offset is inclusive (and the emulator ignores it): filter here too.
                    if name > start_after:
                        found.append((name, None if blob.time_created is None else blob.time_created.timestamp()))
        return sorted(found)

    @contextlib.contextmanager
    def open_stream(self, name: str, version: Version) -> Iterator[Iterator[bytes]]:
        key = self._key(name)
        blob = self._bucket.blob(key)
        # The first range is read here, so what the store says of the object (gone,
        # replaced, unreachable) is raised before the caller has sent anything.
        first = self._range(blob, key, version, 0)
        yield self._chunks(blob, key, version, first)

    def _chunks(self, blob: storage.Blob, key: str, version: Version, data: bytes) -> Iterator[bytes]:
        start = 0
        while True:
            view = memoryview(data)
            for offset in range(0, len(data), STREAM_CHUNK):
                yield bytes(view[offset:offset + STREAM_CHUNK])
            if len(data) < _STREAM_RANGE:
                return  # a short range is the object's end
            start += len(data)
            data = self._range(blob, key, version, start)

    def _range(self, blob: storage.Blob, key: str, version: Version, start: int) -> bytes:
        """Bytes ``start`` onward (at most ``_STREAM_RANGE``) of generation ``version``;
        empty past the end. Every range names the generation, so an object replaced
        mid-stream is ``ObjectChanged``, never a mix of two versions."""
        self._count("download")
        with _mapped("download", key, READ):
            try:
                data: bytes = blob.download_as_bytes(
                    start=start, end=start + _STREAM_RANGE - 1, if_generation_match=int(version),
                    # The SDK cannot check a range against the object's crc32c: the
                    # caller checks the whole file's sha256.
                    checksum=None, retry=self._retry, timeout=self._timeout,
                )
            except gexc.RequestRangeNotSatisfiable:
                return b""  # the previous range ended exactly at the object's end
        return data

    def signed_url(self, name: str, expires_seconds: int) -> str:
        key = self._key(name)
        try:
            signer = self._signing_credentials()
            # The URL's host is the client's endpoint: the emulator's with STORAGE_EMULATOR_HOST.
            url: str = self._bucket.blob(key).generate_signed_url(
                version="v4", expiration=datetime.timedelta(seconds=expires_seconds), method="GET",
                credentials=signer,
            )
        except StorageError as exc:  # the signer's (its cause names the account): now the object's
            raise type(exc)("sign", key, exc.cause) from exc
        except (google.auth.exceptions.GoogleAuthError, AttributeError, ValueError) as exc:
            # AttributeError: the SDK's "you need a private key" for credentials that cannot sign.
            raise SigningUnavailable("sign", key, f"{type(exc).__name__}: {exc}") from exc
        self._count("sign")
        return url

    def _signing_credentials(self) -> google.auth.credentials.Signing:
        """What signs: the credentials themselves if they hold a key of the account to
        sign as, else an IAM signer as that account; made once."""
        with self._signer_lock:
            if self._signer is None:
                self._signer = self._new_signer()
            return self._signer

    def _new_signer(self) -> google.auth.credentials.Signing:
        credentials = self._client._credentials
        if isinstance(credentials, google.auth.credentials.AnonymousCredentials):
            # The emulator's client: signing uses the standard credentials (a key file).
            try:
                credentials, _ = google.auth.default(scopes=[_CLOUD_PLATFORM])
            except google.auth.exceptions.DefaultCredentialsError as exc:
                raise SigningUnavailable(
                    "sign with", self.url, f"no credentials to sign with (GOOGLE_APPLICATION_CREDENTIALS): {exc}",
                ) from exc
        if isinstance(credentials, google.auth.credentials.Signing) and self._signing_account in (
            None, credentials.signer_email,
        ):
            return credentials  # a service-account key: signs locally, no request
        email = self._signing_account or self._own_account(credentials)
        return _IamSigner(credentials, email, self._timeout, self._iam_endpoint)

    def _own_account(self, credentials: google.auth.credentials.Credentials) -> str:
        """The service account the runtime credentials are (metadata-server credentials
        learn it when they first fetch a token)."""
        email = getattr(credentials, "service_account_email", None)
        if email in (None, "default"):
            try:
                credentials.refresh(google.auth.transport.requests.Request())
            except google.auth.exceptions.RefreshError as exc:
                raise SigningUnavailable("sign with", self.url, f"the credentials' token cannot be had: {exc}") from exc
            except google.auth.exceptions.TransportError as exc:
                raise StorageUnavailable("sign with", self.url, f"the credentials' token cannot be had: {exc}") from exc
            email = getattr(credentials, "service_account_email", None)
        if not isinstance(email, str) or email == "default":
            raise SigningUnavailable(
                "sign with", self.url,
                f"the credentials ({type(credentials).__module__}.{type(credentials).__name__}) are no service "
                "account's and hold no key: set SIGNING_SERVICE_ACCOUNT to a service account on which they have "
                f"{TOKEN_CREATOR_ROLE}",
            )
        return email
