"""PASSWORD_FILE written as a URL: the bucket object that holds the htpasswd file.

Only the value's shape is checked here (no network, no file): the object itself is read
at start-up (``password_file.BucketPasswordFile.load``).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Mapping, Optional

from gcs_sync.config import Settings, is_bucket_name, read_variable
from gcs_sync.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class BucketObject:
    """One object named by URL: ``gs://BUCKET/KEY`` or ``s3://BUCKET/KEY``."""

    scheme: str
    bucket: str
    key: str

    @property
    def folder(self) -> str:
        """The key's folder (the prefix of a driver for this object)."""
        return self.key.rpartition("/")[0]

    @property
    def name(self) -> str:
        """The key's last part (the object's name for that driver)."""
        return self.key.rpartition("/")[2]

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key}"


_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", re.S)
_SCHEME_BACKENDS = {"gs": "gcs", "s3": "s3"}


def is_object_url(value: str) -> bool:
    """Whether PASSWORD_FILE is written as a URL (then it must name a bucket object)."""
    return _URL.fullmatch(value) is not None


def parse_password_object(value: str, backend: str) -> Optional[BucketObject]:
    """PASSWORD_FILE as an object in the store STORAGE_BACKEND names, or None for a local
    path. Raises ConfigError naming PASSWORD_FILE for a URL that names no such object."""
    match = _URL.fullmatch(value)
    if match is None:
        return None
    scheme = match[1].lower()
    if scheme not in _SCHEME_BACKENDS:
        # A local file is a plain path (pypiserver re-reads it when it changes): no file://.
        raise ConfigError("PASSWORD_FILE", f"{value!r}: only gs:// and s3:// URLs name an object; "
                          "a local file is a plain path")
    if _SCHEME_BACKENDS[scheme] != backend:
        raise ConfigError("PASSWORD_FILE", f"{value!r} is an object of STORAGE_BACKEND="
                          f"{_SCHEME_BACKENDS[scheme]}, but STORAGE_BACKEND is {backend}")
    bucket, _, key = match[2].partition("/")
    if not is_bucket_name(bucket):
        raise ConfigError("PASSWORD_FILE", f"{value!r}: {bucket!r} is not a bucket name")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts) or "\\" in key or not key.isprintable():
        raise ConfigError("PASSWORD_FILE", f"{value!r} must name an object, as in {scheme}://{bucket}/config/htpasswd "
                          "(no '..', '.', empty folders, backslashes or control characters)")
    return BucketObject(scheme, bucket, key)


def password_object(settings: Settings) -> Optional[BucketObject]:
    """The object the settings' PASSWORD_FILE names; None for a local file or none."""
    if settings.password_file is None:
        return None
    return parse_password_object(settings.password_file, settings.storage_backend)


def password_file_setting(environ: Mapping[str, str]) -> Optional[str]:
    """PASSWORD_FILE as ``Settings.from_env`` reads it, unchecked: the ``users`` commands
    edit the file, which may not exist yet or have no users."""
    return read_variable(environ, "PASSWORD_FILE")
