"""The exceptions this package raises, in one tree.

    GcsSyncError
    ├── ConfigError (ValueError)          a setting is missing or malformed; names the variable
    └── StorageError                      a bucket operation failed; names the object
        ├── ObjectNotFound (FileNotFoundError)
        ├── ObjectExists (FileExistsError)     a create-only write met an existing object (its 412)
        ├── ObjectChanged                      not at the version the caller expected (a 412 on
        │                                      a conditional read, write or delete)
        ├── BucketNotFound                     the bucket (or local bucket folder) is missing
        ├── StoragePermissionDenied (PermissionError)
        ├── StorageUnavailable (ConnectionError)   network error, timeout, 5xx after retries
        │   └── WritesSuspended                    not tried: a write failed as unavailable just before
        └── SigningUnavailable                 no signed URL can be made here (a local folder;
            │                                  credentials without a key or an account to sign as)
            └── SigningNotPermitted (also StoragePermissionDenied)   the signer was refused; names the role

Drivers translate their SDK's errors into these at the boundary, each in one table read
as the call means it (``drivers.base.Meaning``), always ``from`` the original, so the
cause stays in the traceback and the log.
"""

from __future__ import annotations

import errno


class GcsSyncError(Exception):
    """Base of every error raised on purpose by gcs_sync."""


class ConfigError(GcsSyncError, ValueError):
    """A configuration variable is missing or malformed."""

    def __init__(self, variable: str, problem: str):
        self.variable = variable
        self.problem = problem
        super().__init__(f"{variable}: {problem}")


class StorageError(GcsSyncError):
    """A bucket operation failed. ``object_name`` is the name inside the bucket.

    ``changed_before_failure`` lists what an operation on several files had already
    changed in the bucket, and could not undo, when this error stopped it.
    """

    def __init__(self, operation: str, object_name: str, cause: str):
        self.operation = operation
        self.object_name = object_name
        self.cause = cause
        self.changed_before_failure: list[str] = []
        super().__init__(f"{operation} {object_name!r} failed: {cause}")


class ObjectNotFound(StorageError, FileNotFoundError):
    """The object does not exist (any more)."""


class ObjectExists(StorageError, FileExistsError):
    """A create-only write found the object already there (HTTP 412 precondition)."""


class ObjectChanged(StorageError):
    """The object is no longer at the version the caller listed or read (HTTP 412 on a
    conditional read, write or delete; never ``ObjectExists``)."""


class BucketNotFound(StorageError):
    """The bucket itself does not exist, or is not visible to these credentials."""


class StoragePermissionDenied(StorageError, PermissionError):
    """The credentials may not do this operation."""


class StorageUnavailable(StorageError, ConnectionError):
    """The store could not be reached or kept failing within the retry budget."""


class WritesSuspended(StorageUnavailable):
    """A write refused without a try: one failed as unavailable moments ago (the write
    breaker, ``breaker.py``). Nothing was sent, so nothing changed."""


class SigningUnavailable(StorageError):
    """A signed URL of the object cannot be made here: the store cannot sign (a local
    folder), or the credentials cannot (no key, no service account to sign as)."""


class SigningNotPermitted(SigningUnavailable, StoragePermissionDenied):
    """The credentials may not sign: the message names the role or permission missing
    (GCS: ``roles/iam.serviceAccountTokenCreator`` on the service account)."""


def failure_reason(exc: BaseException) -> str:
    """A short category for ``exc`` that names no object, path or user: what anonymous
    readiness may say about a failure (the details go to the log)."""
    if isinstance(exc, OSError) and getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return "local disk full"
    cause = getattr(exc, "cause", "")
    if isinstance(exc, StorageError) and ("No space left" in cause or "Disk quota exceeded" in cause):
        return "local disk full"
    if isinstance(exc, StorageError) and cause.startswith("local folder:"):
        return "local folder error"
    for kind, reason in (
        (StorageUnavailable, "bucket unavailable"),
        (StoragePermissionDenied, "bucket permission denied"),
        (BucketNotFound, "bucket not found"),
        (ObjectChanged, "object changed during the sync"),
        (ObjectNotFound, "object gone during the sync"),
        (StorageError, "bucket error"),
        (OSError, "local folder error"),
    ):
        if isinstance(exc, kind):
            return reason
    return "error"
