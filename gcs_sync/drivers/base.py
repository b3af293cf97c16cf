"""The file store driver interface: what every storage backend must do.

Contract, checked for every driver by ``tests/test_drivers.py``:

- Object names passed in and returned are relative to the configured prefix and contain
  no ``/``; ``list_objects`` returns only the objects directly under the prefix.
- ``RemoteObject.version`` (a ``Version``) changes whenever the object's content may have
  changed and is stable otherwise. Each driver has its own kind, a ``NewType`` of
  ``Version`` (GCS ``Generation``, S3 ``ETag``, local ``Fingerprint``: inode+size+mtime);
  a version goes back only to the driver that gave it.
- ``download`` writes the object to ``destination`` (a temporary path chosen by the
  caller), checks the bytes against the store's own checksum, and returns the sha256 of
  the bytes written, computed while or right after writing them (never taken from the
  ``sha256`` metadata, which another tool may have left stale: a mismatch is logged), and raises
  ``ObjectNotFound`` if the object is gone or ``ObjectChanged`` if it is no longer at
  ``version``.
- ``stat`` reads one object's metadata with one request (object-level permission only)
  and returns it as ``list_objects`` would, or None if there is no such object.
- ``upload(create_only=True)`` succeeds only if no object of that name exists, else
  raises ``ObjectExists``. ``upload(if_version=V)`` replaces the object only if it is
  still at version ``V``, else raises ``ObjectChanged`` (also if it is gone); the local
  driver checks, then replaces (not atomic, as its conditional delete). The policy
  for a write that met an object, or got no answer, is ``upload``'s here, once for
  every driver: a write of ours that landed although its reply was lost (a retry met
  412, or the last attempt timed out) is recognised by its upload token and is a
  success with ``created=True``; an object with the very same ``sha256`` metadata (the
  client's retry of an upload whose first write landed late; PyPI also accepts an
  identical re-upload) is a success with ``created=False``: another request made it,
  so this one must never delete it.
- ``stat`` also returns the object's upload token, where the store keeps metadata.
- ``put_note``, ``read_note`` and ``list_notes`` write, read and list small bookkeeping
  objects under the prefix's ``.gcs_sync/`` folder (the intents of multi-file uploads),
  which ``list_objects`` never shows; ``delete`` removes them.
- ``delete`` is idempotent: deleting a missing object succeeds. With ``if_version`` it
  deletes only that version and raises ``ObjectChanged`` if the object was replaced.
- ``list_notes_after`` lists bookkeeping objects after a name, with the store's time of
  each, so an instance reads only the change-feed entries added since it last looked
  (``sync/feed.py``), and can tell a writer whose clock is off.
- Every failure is one of ``gcs_sync.errors.StorageError``'s subclasses, raised ``from``
  the SDK's exception, carrying the object name. Each driver maps its SDK's errors in
  one table-driven function; what a 404 or a 412 means depends on the call (``Meaning``):
  a 412 is ``ObjectExists`` only for a create-only write, and ``ObjectChanged`` on a
  conditional read, write or delete.
- ``check_bucket`` makes one cheap request (a listing of at most one object) and raises
  ``BucketNotFound`` if the bucket does not exist, ``StoragePermissionDenied`` if the
  credentials may not list it (or cannot be loaded), ``StorageUnavailable`` if the
  store did not answer; it is what an instance asks at start-up.
- ``open_stream`` gives the bytes of an object at a version as an iterator of chunks of
  at most ``STREAM_CHUNK`` bytes, never the whole object in memory (the package-file
  cache streams a file to a client while it writes it). What the store says before the
  first byte (``ObjectNotFound``, ``ObjectChanged``, ``StorageUnavailable``) is raised by
  entering the context; a connection that breaks later raises ``StorageError`` (mostly
  ``StorageUnavailable``) from the iterator. The caller checks the sha256.
- ``calls`` counts the API requests made, by operation, for logs and benchmarks.
- ``signed_url`` gives a URL that lets anyone GET object ``name`` for ``expires_seconds``
  (PACKAGE_FILES=redirect or cache); ``check_signing`` makes sure one can be made, at
  start-up. Both raise ``SigningUnavailable`` where the store or the credentials cannot
  sign, ``SigningNotPermitted`` (naming the role missing) where the signer was refused.
"""

from __future__ import annotations

import abc
import collections
import contextlib
import dataclasses
import enum
import logging
import threading
import uuid
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Mapping, NewType, Optional, Union

from gcs_sync.errors import (
    BucketNotFound,
    ObjectChanged,
    ObjectExists,
    ObjectNotFound,
    SigningUnavailable,
    StorageError,
    StorageUnavailable,
)

log = logging.getLogger(__name__)

# Metadata written with every upload. The token lets a retried create-only write that
# meets "412 already exists" recognise its own earlier attempt.
SHA256_KEY = "sha256"
UPLOAD_TOKEN_KEY = "upload-token"
# The most ``open_stream`` hands over at once.
STREAM_CHUNK = 1 << 20

# An object's version, as its driver gives it: opaque, compared for equality only, and
# passed back only to that driver (each driver's kind is a NewType of it).
Version = NewType("Version", str)


class Failure(enum.Enum):
    """What a driver's error table says of an SDK error whose meaning depends on the call
    (``Meaning`` decides)."""

    MISSING = "no such object, or no such bucket (404)"
    PRECONDITION = "precondition failed (412)"


# A row of a driver's error table: an error kind, or a Failure the call decides about.
ErrorKind = Union[type[StorageError], Failure]


@dataclasses.dataclass(frozen=True)
class Meaning:
    """What a 404 and a 412 mean for one kind of call, and how a failed condition is said
    (``said``, with ``{exc}`` for the SDK's message; empty: the SDK's error as it is)."""

    missing: type[StorageError]
    precondition: type[StorageError] = ObjectChanged
    said: str = ""

    def error(self, kind: ErrorKind, operation: str, key: str, exc: BaseException) -> StorageError:
        cause = f"{type(exc).__name__}: {exc}"
        if not isinstance(kind, Failure):
            return kind(operation, key, cause)
        if kind is Failure.MISSING and self.missing is not self.precondition:
            return self.missing(operation, key, cause)
        # A failed condition (or a 404 where the call names a version, as S3's If-Match).
        return self.precondition(operation, key, self.said.format(exc=exc) if self.said else cause)


# The calls' meanings, shared by the drivers (a driver whose store answers differently
# derives its own with ``dataclasses.replace``).
# A listing or an unconditional write: a 404 can only be the bucket's.
BUCKET = Meaning(missing=BucketNotFound)
# A read at a listed version: gone, or replaced since.
READ = Meaning(missing=ObjectNotFound, said="changed since it was listed: {exc}")
# A delete (at a listed version): gone is done; replaced is not ours to delete.
DELETE = Meaning(missing=ObjectNotFound, said="replaced since it was listed: {exc}")
# A create-only write: the one call where a 412 means "exists".
CREATE = Meaning(missing=BucketNotFound, precondition=ObjectExists,
                 said="an object of this name is already in the bucket")
# A write over a version read before: replaced or deleted since (S3 answers If-Match on a
# deleted object with a 404).
REPLACE = Meaning(missing=ObjectChanged, said="replaced or deleted since it was read")


@contextlib.contextmanager
def mapped_errors(
    sdk_errors: tuple[type[BaseException], ...], kind_of: Callable[[BaseException], ErrorKind],
    operation: str, key: str, meaning: Meaning,
) -> Iterator[None]:
    """Raise the SDK's errors (``sdk_errors``) in the block as ours, ``from`` theirs: of the
    kind the driver's one table (``kind_of``) gives, read as the call means it. A driver
    binds its own: ``_mapped = functools.partial(mapped_errors, _SDK_ERRORS, _error_kind)``."""
    try:
        yield
    except StorageError:
        raise  # already ours (some are OSErrors too: ObjectExists, StorageUnavailable...)
    except sdk_errors as exc:
        raise meaning.error(kind_of(exc), operation, key, exc) from exc


@dataclasses.dataclass(frozen=True)
class RemoteObject:
    name: str
    version: Version
    size: int
    sha256: Optional[str] = None
    # Only from ``stat`` (listings carry no metadata on S3): the token of the write that
    # made this version, None if another tool wrote it or the store keeps no metadata.
    upload_token: Optional[str] = dataclasses.field(default=None, compare=False)
    # When this version was written, in seconds since the epoch, by the store's clock (GCS
    # timeCreated, S3 LastModified, a file's mtime); from listings and ``stat``. What a
    # record says as the upload time of a file another tool put there.
    modified: Optional[float] = dataclasses.field(default=None, compare=False)


@dataclasses.dataclass(frozen=True)
class StoredObject(RemoteObject):
    """What ``upload`` returns: the object now in the store, and whether this very call
    created that version (False: the same bytes were already there, someone else's)."""

    created: bool = True


def served_sha256(key: str, computed: str, claimed: Optional[str]) -> str:
    """The digest of the bytes downloaded: ``computed``. A different ``sha256`` metadata
    (``claimed``) means another tool replaced the object and left ours behind: said once
    per download, since pip checks the digest we serve against the bytes."""
    if claimed is not None and claimed != computed:
        log.warning("%s: its sha256 metadata (%s) is not the digest of its bytes (%s); serving the "
                    "digest of the bytes", key, claimed, computed)
    return computed


class FileStoreDriver(abc.ABC):
    """One bucket (or folder) and a prefix inside it."""

    url: str
    # Whether objects carry their sha256 and upload token (False: a plain folder).
    keeps_metadata = True

    def __init__(self, prefix: str = "") -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self._calls_lock = threading.Lock()
        self._prefix = f"{prefix}/" if prefix else ""

    def _key(self, name: str) -> str:
        """The object's full key in the bucket."""
        return self._prefix + name

    def _count(self, operation: str) -> None:
        with self._calls_lock:
            self.calls[operation] += 1

    @staticmethod
    def new_upload_token() -> str:
        return uuid.uuid4().hex

    @abc.abstractmethod
    def list_objects(self) -> dict[str, RemoteObject]:
        """Every object directly under the prefix, by name; pages through any size."""

    @abc.abstractmethod
    def check_bucket(self) -> None:
        """One cheap request that succeeds only if the bucket exists and may be listed."""

    @abc.abstractmethod
    def stat(self, name: str) -> Optional[RemoteObject]:
        """Object ``name``'s metadata (one request); None if there is no such object."""

    @abc.abstractmethod
    def download(self, name: str, destination: Path, version: Version, listed_sha256: Optional[str] = None) -> str:
        """Write object ``name`` at ``version`` to ``destination``; return its sha256."""

    def upload(
        self, name: str, source: Path, *, create_only: bool, metadata: Mapping[str, str],
        if_version: Optional[Version] = None, token: Optional[str] = None,
    ) -> StoredObject:
        """Store ``source`` as object ``name``; return what is now in the store. With
        ``if_version`` (and not ``create_only``), only over that version of the object.
        ``token`` (a new one by default) is written with it, so a later look can tell
        this write's object from any other."""
        token = token or self.new_upload_token()
        sha256 = metadata.get(SHA256_KEY)
        try:
            written = self._write(name, source, create_only=create_only, if_version=if_version,
                                  metadata={**metadata, UPLOAD_TOKEN_KEY: token})
            return StoredObject(name, written.version, written.size, sha256, token, created=True)
        except (ObjectExists, ObjectChanged, StorageUnavailable) as exc:
            # Met an object (412), or got no answer: look once at what is there.
            found = self.look_once(name, sha256)
            if found is not None and found.upload_token == token:
                # Our own write: it landed although its reply was lost.
                return StoredObject(name, found.version, found.size, sha256, token, created=True)
            if found is not None and sha256 is not None and found.sha256 == sha256 and found.size == source.stat().st_size:
                # The very same bytes, stored by another request: a success, not ours.
                # (The size too: metadata alone could be another tool's stale claim.)
                return StoredObject(name, found.version, found.size, sha256, found.upload_token, created=False)
            raise exc

    @abc.abstractmethod
    def _write(
        self, name: str, source: Path, *, create_only: bool, if_version: Optional[Version], metadata: Mapping[str, str],
    ) -> RemoteObject:
        """One store write, with its precondition: ``ObjectExists`` if ``create_only``
        met an object, ``ObjectChanged`` if ``if_version`` did not match; returns the
        version written."""

    def look_once(self, name: str, sha256: Optional[str]) -> Optional[RemoteObject]:
        """The object as ``stat`` gives it, in one attempt (after a failed write, which
        used the retry budget); None if it is missing or cannot be read now. A store
        without metadata computes the sha256 from the bytes if ``sha256`` is given."""
        try:
            return self._stat_once(name)
        except StorageError:
            return None  # can't tell: the caller reports the original failure

    def _stat_once(self, name: str) -> Optional[RemoteObject]:
        """``stat`` without retries (a store whose SDK retries says how)."""
        return self.stat(name)

    @abc.abstractmethod
    def delete(self, name: str, if_version: Optional[Version] = None) -> None:
        """Remove object ``name``; succeed if it is already gone."""

    # Small bookkeeping objects under the prefix's ".gcs_sync/" folder (never listed with
    # the packages): a multi-file upload's intent (see ``pending.py``). ``name`` is
    # relative to the prefix, e.g. ".gcs_sync/pending/ID.json"; ``delete`` removes them.

    @abc.abstractmethod
    def put_note(self, name: str, data: bytes, if_version: Optional[Version] = None, create_only: bool = False) -> Version:
        """Write the small object ``name``; return its new version. With ``if_version``,
        only over that version: else ``ObjectChanged`` (also if it is gone). With
        ``create_only``, only if there is no such object: else ``ObjectExists``."""

    def read_note(self, name: str) -> Optional[bytes]:
        """The bytes of the small object ``name``; None if there is none."""
        found = self.read_note_versioned(name)
        return None if found is None else found[0]

    @abc.abstractmethod
    def read_note_versioned(self, name: str) -> Optional[tuple[bytes, Version]]:
        """The bytes of the small object ``name`` and the version they are (one request
        where the store allows); None if there is none."""

    def list_notes(self, folder: str) -> list[str]:
        """The names of the objects directly in ``folder`` (ending in "/"), as ``name``s."""
        return list(self.list_note_versions(folder))

    @abc.abstractmethod
    def list_note_versions(self, folder: str) -> dict[str, Version]:
        """The objects directly in ``folder`` (ending in "/"), by ``name``, with their versions."""

    @abc.abstractmethod
    def list_notes_after(self, folder: str, start_after: str) -> list[tuple[str, Optional[float]]]:
        """The objects directly in ``folder`` (ending in "/") whose names sort after
        ``start_after`` (a ``name``), sorted by name, each with when the store wrote it
        (seconds since the epoch by the store's clock: GCS timeCreated, S3 LastModified, a
        file's mtime; None if unknown): one request per 1,000 names where the store can
        start a listing there (GCS ``start_offset``, S3 ``StartAfter``). What a change feed
        reads (``sync/feed.py``): its cost is what was added since, not the folder."""

    def list_note_names_after(self, folder: str, start_after: str) -> list[str]:
        """``list_notes_after``'s names."""
        return [name for name, _ in self.list_notes_after(folder, start_after)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url})"

    def open_stream(self, name: str, version: Version) -> ContextManager[Iterator[bytes]]:
        """The bytes of object ``name`` at ``version`` in chunks (at most ``STREAM_CHUNK``),
        without holding the whole object in memory; raises ObjectNotFound / ObjectChanged /
        StorageUnavailable (typed, with the name) before the first chunk where the store says
        so, and StorageError mid-stream if the connection breaks. The caller checks the sha256."""
        raise NotImplementedError(f"{type(self).__name__} cannot stream {name!r}")

    # Signed URLs (PACKAGE_FILES=redirect, and cache mode's large files).

    def signed_url(self, name: str, expires_seconds: int) -> str:
        """A URL that lets anyone GET object ``name`` for ``expires_seconds``."""
        raise SigningUnavailable("sign", self._key(name), f"{type(self).__name__} cannot sign URLs")

    def check_signing(self) -> None:
        """Make sure a URL can be signed (at start-up); raises what ``signed_url`` would,
        naming the store rather than the object signed to find out."""
        try:
            self.signed_url(".gcs_sync/signing-check", 60)  # signing needs no object: none is read
        except StorageError as exc:
            raise type(exc)("sign URLs for", self.url, exc.cause) from exc
