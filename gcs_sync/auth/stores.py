"""Where the htpasswd file is kept, for the commands that edit it: a local file, or an
object in the bucket; and its users, read and written through passlib.

A change is written whole, and only over the version that was read (a fingerprint check
just before the rename locally; a generation or ETag precondition in the bucket), so two
edits at once never lose one silently: the second gets ObjectChanged. Nothing is written
that the server would refuse (``htpasswd.check_entries``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Optional, Protocol

from passlib.apache import HtpasswdFile

from gcs_sync.auth.htpasswd import AccountedHtpasswd, HtpasswdProblem, check_entries
from gcs_sync.auth.password_file import step_mtime
from gcs_sync.auth.password_object import is_object_url, parse_password_object
from gcs_sync.config import Settings
from gcs_sync.drivers import FileStoreDriver, make_driver
from gcs_sync.drivers.base import SHA256_KEY, Version
from gcs_sync.errors import ConfigError, ObjectChanged, ObjectExists
from gcs_sync.files import fingerprint, replacing
from gcs_sync.sync.feed import ChangeFeed, ChangeKind


@dataclasses.dataclass(frozen=True)
class Content:
    data: bytes
    version: str


class HtpasswdStore(Protocol):
    where: str

    def read(self) -> Optional[Content]:
        """The file's bytes and version; None if there is no such file."""

    def write(self, data: bytes, version: Optional[str]) -> None:
        """Store ``data`` over ``version`` (None: only if there is no file); raise
        ObjectChanged if it is no longer at that version."""

    def announce(self) -> bool:
        """Tell the servers of a change: True if they were told, False if they need no
        telling (they re-read a local file themselves). Raises StorageError."""


class LocalHtpasswd:
    """A local htpasswd file: pypiserver re-reads it when it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path.expanduser().absolute()
        self.where = str(self.path)

    def read(self) -> Optional[Content]:
        try:
            with open(self.path, "rb") as source:
                return Content(source.read(), fingerprint(os.fstat(source.fileno())))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError("PASSWORD_FILE", f"cannot read htpasswd file {self.path}: {exc}") from exc

    def write(self, data: bytes, version: Optional[str]) -> None:
        try:
            # A worker reading the file sees the old one or the new one, never a part.
            with replacing(self.path) as temp:
                mode = self._mode()
                temp.touch(mode=mode)
                temp.chmod(mode)  # as the file it replaces, whatever the umask
                temp.write_bytes(data)
                # Check, then replace: the window is a few microseconds, not the prompt's.
                if self._version() != version:
                    raise ObjectChanged("write", self.where, "changed while this command ran")
                step_mtime(temp, self.path)
        except OSError as exc:
            raise ConfigError("PASSWORD_FILE", f"cannot write htpasswd file {self.path}: {exc}") from exc

    def _mode(self) -> int:
        """The permissions of the file replaced; a new one is readable by its owner only."""
        try:
            return self.path.stat().st_mode & 0o777
        except FileNotFoundError:
            return 0o600

    def _version(self) -> Optional[str]:
        try:
            return fingerprint(self.path.stat())
        except FileNotFoundError:
            return None

    def announce(self) -> bool:
        return False


class BucketHtpasswd:
    """An htpasswd object in the bucket; the change feed tells the servers."""

    def __init__(self, url: str, driver: FileStoreDriver, name: str, packages: FileStoreDriver) -> None:
        self.where = url
        self._driver = driver  # for the object's folder
        self._name = name
        self._packages = packages  # for the package folder's change feed

    def read(self) -> Optional[Content]:
        found = self._driver.stat(self._name)
        if found is None:
            return None
        with tempfile.TemporaryDirectory(prefix="gcs-sync-users-") as scratch:
            copy = Path(scratch) / "htpasswd"
            self._driver.download(self._name, copy, found.version)  # that version's bytes
            return Content(copy.read_bytes(), found.version)

    def write(self, data: bytes, version: Optional[str]) -> None:
        with tempfile.TemporaryDirectory(prefix="gcs-sync-users-") as scratch:
            source = Path(scratch) / "htpasswd"
            source.write_bytes(data)
            try:
                self._driver.upload(self._name, source, create_only=version is None,
                                    if_version=None if version is None else Version(version),
                                    metadata={SHA256_KEY: hashlib.sha256(data).hexdigest()})
            except ObjectExists as exc:  # created by someone else meanwhile
                raise ObjectChanged("upload", self.where, "created while this command ran") from exc

    def announce(self) -> bool:
        ChangeFeed(self._packages).announce(ChangeKind.USERS)
        return True


def open_store(password_file: Optional[str], bucket_settings: Callable[[], Settings]) -> HtpasswdStore:
    """The store PASSWORD_FILE names, parsed as the server parses it. ``bucket_settings``
    gives the storage settings; it is called only for an object (a local file needs none)."""
    if password_file is None:
        raise ConfigError("PASSWORD_FILE", "is not set: set it, or pass --password-file")
    if password_file == ".":
        raise ConfigError("PASSWORD_FILE", "is '.' (no authentication): there are no users to manage")
    if not is_object_url(password_file):
        return LocalHtpasswd(Path(password_file))
    # The bucket settings: the object's store, and the package folder's change feed.
    settings = bucket_settings()
    location = parse_password_object(password_file, settings.storage_backend)
    assert location is not None  # a URL: an object, or ConfigError
    driver = make_driver(settings, bucket_name=location.bucket, prefix=location.folder)
    return BucketHtpasswd(str(location), driver, location.name, make_driver(settings))


def read_users(store: HtpasswdStore, scheme: Optional[str] = None) -> tuple[Optional[str], HtpasswdFile]:
    """The file's version (None: no file yet) and its users, new passwords hashed with
    ``scheme``. Raises ConfigError if the file cannot be read."""
    content = store.read()
    if content is None:
        return None, HtpasswdFile(default_scheme=scheme)
    try:
        users = HtpasswdFile.from_string(content.data, default_scheme=scheme)
        users.users()  # names are decoded here
    except ValueError as exc:  # a malformed line, or not UTF-8
        raise ConfigError("PASSWORD_FILE", f"cannot read htpasswd file {store.where}: {exc}") from exc
    return content.version, users


def existing_users(store: HtpasswdStore) -> tuple[str, HtpasswdFile]:
    """As ``read_users``, for a file that must exist already (ConfigError if not)."""
    version, users = read_users(store)
    if version is None:
        raise ConfigError("PASSWORD_FILE", f"no such file: {store.where} ('users add NAME' creates it)")
    return version, users


def write_users(store: HtpasswdStore, users: HtpasswdFile, version: Optional[str]) -> None:
    """Store ``users`` over ``version``: ConfigError if the server would refuse the file,
    ObjectChanged if the store is no longer at ``version``."""
    data = users.to_string()
    try:
        # The server's own check: never write a file it would refuse (an entry of another
        # scheme, a damaged hash). ``users add`` of that entry's user replaces it.
        check_entries(AccountedHtpasswd.from_string(data), store.where)
    except HtpasswdProblem as exc:
        raise ConfigError("PASSWORD_FILE", f"{exc}; nothing was written") from exc
    store.write(data, version)
