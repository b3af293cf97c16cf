"""A plain folder acting as the bucket: the dev default and the fastest test double.

Writes are atomic: a dot-prefixed temporary file, then a hard link (create-only: fails if
the name exists) or a rename (overwrite). Its own temporary files are never listed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
from pathlib import Path
from stat import S_ISREG
from typing import BinaryIO, Iterator, Mapping, NewType, Optional

from gcs_sync.drivers.base import (
    CREATE,
    READ,
    STREAM_CHUNK,
    ErrorKind,
    Failure,
    FileStoreDriver,
    Meaning,
    RemoteObject,
    Version,
    mapped_errors,
)
from gcs_sync.errors import BucketNotFound, ObjectChanged, SigningUnavailable, StorageError, StoragePermissionDenied
from gcs_sync.files import TEMP_SUFFIX, copy_hashing, fingerprint, replacing, sha256_of, temp_name

# A file's inode, size and modification time (``gcs_sync.files.fingerprint``), as a Version.
Fingerprint = NewType("Fingerprint", Version)

# The OS's errors and what each is, the first match winning. A missing path that means
# "no such object" (a listing's, a stat's) is caught where it is a result, not an error.
_ERRORS: tuple[tuple[type[OSError], ErrorKind], ...] = (
    (FileNotFoundError, Failure.MISSING),
    (FileExistsError, Failure.PRECONDITION),  # os.link onto an existing name
    (PermissionError, StoragePermissionDenied),
    (OSError, StorageError),
)
# A missing or an existing path is a folder problem, unless the call says what it means:
# a download's missing file is ObjectNotFound (READ); a write's existing name is
# ObjectExists (os.link's create-only refusal).
_FOLDER = Meaning(missing=StorageError, precondition=StorageError)
_WRITE = dataclasses.replace(CREATE, missing=StorageError)


def _error_kind(exc: BaseException) -> ErrorKind:
    """The one place the OS's errors are sorted into ours."""
    return next((kind for os_error, kind in _ERRORS if isinstance(exc, os_error)), StorageError)


_mapped = functools.partial(mapped_errors, (OSError,), _error_kind)


def _fingerprint(stat: os.stat_result) -> Fingerprint:
    return Fingerprint(Version(fingerprint(stat)))


def _sha256_or_none(path: Path) -> Optional[str]:
    with _mapped("upload", path.name, _FOLDER):
        try:
            return sha256_of(path)
        except FileNotFoundError:
            return None  # removed meanwhile: not the same upload


def _is_own_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


class LocalFolderDriver(FileStoreDriver):
    keeps_metadata = False

    def __init__(self, bucket_folder: Path, prefix: str, create: bool = False) -> None:
        super().__init__()
        self._root = Path(bucket_folder).absolute()
        if create:  # the dev default; a missing bucket is otherwise an error, as in the cloud
            self._root.mkdir(parents=True, exist_ok=True)
        self._folder = self._root / prefix if prefix else self._root
        self.url = f"file://{self._folder}/"

    def _existing_folder(self, operation: str, name: str) -> Path:
        if not self._root.is_dir():
            raise self._bucket_not_found(operation, name)
        return self._folder

    def _bucket_not_found(self, operation: str, name: str) -> BucketNotFound:
        return BucketNotFound(operation, name, f"bucket folder {self._root} does not exist")

    def _make_folders(self, folder: Path) -> None:
        """``folder`` and those between it and the bucket folder, never the bucket folder
        itself: a bucket removed after ``_existing_folder`` looked is an error, as in the
        cloud, not made again empty by a write (``mkdir(parents=True)`` did that)."""
        made = self._root
        for part in folder.relative_to(self._root).parts:
            made = made / part
            made.mkdir(exist_ok=True)

    @contextlib.contextmanager
    def _writing(self, name: str) -> Iterator[None]:
        """A write's missing path, where the bucket folder itself is gone (removed after
        ``_existing_folder`` looked, at any step of the write): BucketNotFound, as for a
        write to a deleted bucket in the cloud, not a folder error."""
        try:
            yield
        except FileNotFoundError as exc:
            if not self._root.is_dir():
                raise self._bucket_not_found("upload", name) from exc
            raise

    def list_objects(self) -> dict[str, RemoteObject]:
        self._count("list")
        folder = self._existing_folder("list", self.url)
        found: dict[str, RemoteObject] = {}
        with _mapped("list", self.url, _FOLDER):
            try:
                entries = list(os.scandir(folder))
            except FileNotFoundError:
                return {}  # the prefix folder appears with the first upload
        for entry in entries:
            if _is_own_temp(entry.name):
                continue
            try:  # (not a _mapped block per file: a fifth of a listing's CPU at 50,000 files)
                if not entry.is_file(follow_symlinks=False):
                    continue
                stat = entry.stat()
            except FileNotFoundError:
                continue  # deleted while we listed: simply not there
            except OSError as exc:
                raise _FOLDER.error(_error_kind(exc), "list", entry.name, exc) from exc
            found[entry.name] = RemoteObject(entry.name, _fingerprint(stat), stat.st_size, modified=stat.st_mtime)
        return found

    def check_bucket(self) -> None:
        self._count("check")
        folder = self._existing_folder("list", self.url)
        with _mapped("list", self.url, _FOLDER):
            try:
                with os.scandir(folder):
                    pass
            except FileNotFoundError:
                return  # the prefix folder appears with the first upload

    def stat(self, name: str) -> Optional[RemoteObject]:
        self._count("stat")
        path = self._existing_folder("stat", name) / name
        with _mapped("stat", name, _FOLDER):
            try:
                stat = path.stat()
            except FileNotFoundError:
                return None
        if not S_ISREG(stat.st_mode):
            return None  # a folder is not an object, as in the listing
        return RemoteObject(name, _fingerprint(stat), stat.st_size, modified=stat.st_mtime)

    def download(self, name: str, destination: Path, version: Version, listed_sha256: Optional[str] = None) -> str:
        self._count("download")
        source = self._existing_folder("download", name) / name
        with _mapped("download", name, READ):
            with open(source, "rb") as src:
                if _fingerprint(os.fstat(src.fileno())) != version:
                    raise ObjectChanged("download", name, "changed since it was listed")
                with open(destination, "wb") as dst:
                    return copy_hashing(src, dst).sha256

    def _write(
        self, name: str, source: Path, *, create_only: bool, if_version: Optional[Version], metadata: Mapping[str, str],
    ) -> RemoteObject:
        # A folder keeps no metadata: no sha256, no upload token (a write here cannot
        # lose its reply, so the token is never needed).
        self._count("upload")
        folder = self._existing_folder("upload", name)
        target = folder / name
        with _mapped("upload", name, _WRITE), self._writing(name):
            self._make_folders(folder)
            if create_only:
                temp = folder / temp_name(name)
                try:
                    shutil.copyfile(source, temp)
                    os.link(temp, target)  # atomic, and fails if the name exists
                finally:
                    temp.unlink(missing_ok=True)
            else:
                with replacing(target) as temp:
                    shutil.copyfile(source, temp)
                    # Check, then replace: not atomic, as the conditional delete below.
                    if if_version is not None and self._version_of(target) != if_version:
                        raise ObjectChanged("upload", name, "replaced or deleted since it was read")
            stat = target.stat()
        return RemoteObject(name, _fingerprint(stat), stat.st_size, modified=stat.st_mtime)

    def look_once(self, name: str, sha256: Optional[str]) -> Optional[RemoteObject]:
        found = self.stat(name)
        if found is None or sha256 is None:
            return found
        # No metadata here: the bytes say whether it is the same upload.
        return dataclasses.replace(found, sha256=_sha256_or_none(self._folder / name))

    @staticmethod
    def _version_of(path: Path) -> Optional[Fingerprint]:
        try:
            return _fingerprint(path.stat())
        except FileNotFoundError:
            return None

    def delete(self, name: str, if_version: Optional[Version] = None) -> None:
        # With if_version this is check-then-act, not atomic as on GCS and S3: a file
        # replaced by another process in between is deleted. Acceptable for a dev store.
        self._count("delete")
        path = self._existing_folder("delete", name) / name
        with _mapped("delete", name, _FOLDER):
            if if_version is not None:
                current = self._version_of(path)
                if current is None:
                    return
                if current != if_version:
                    raise ObjectChanged("delete", name, "replaced since it was listed")
            path.unlink(missing_ok=True)

    def put_note(self, name: str, data: bytes, if_version: Optional[Version] = None, create_only: bool = False) -> Version:
        self._count("upload")
        note = self._existing_folder("upload", name) / name
        with _mapped("upload", name, _WRITE if create_only else _FOLDER), self._writing(name):
            self._make_folders(note.parent)
            if create_only:
                temp = note.parent / temp_name(note.name)
                try:
                    temp.write_bytes(data)
                    os.link(temp, note)  # atomic, and fails if the name exists
                finally:
                    temp.unlink(missing_ok=True)
                return _fingerprint(note.stat())
            with replacing(note) as temp:
                temp.write_bytes(data)
                # Check, then replace: not atomic, as the conditional delete (dev only).
                if if_version is not None and self._version_of(note) != if_version:
                    raise ObjectChanged("upload", name, "replaced or deleted since it was read")
            return _fingerprint(note.stat())

    def read_note_versioned(self, name: str) -> Optional[tuple[bytes, Version]]:
        self._count("download")
        with _mapped("download", name, _FOLDER):  # a folder that cannot be read too
            note = self._existing_folder("download", name) / name
            try:
                with open(note, "rb") as source:
                    # Notes are replaced by rename, never written in place: the open
                    # file's fingerprint is the version of the bytes read.
                    return source.read(), _fingerprint(os.fstat(source.fileno()))
            except FileNotFoundError:
                return None

    def list_note_versions(self, folder: str) -> dict[str, Version]:
        self._count("list")
        found: dict[str, Version] = {}
        with _mapped("list", folder, _FOLDER):  # a folder that cannot be read too
            path = self._existing_folder("list", folder) / folder
            try:
                entries = list(os.scandir(path))
            except FileNotFoundError:
                return {}
            for entry in entries:
                if _is_own_temp(entry.name):
                    continue
                try:
                    found[folder + entry.name] = _fingerprint(entry.stat(follow_symlinks=False))
                except FileNotFoundError:
                    continue  # deleted while we listed
        return found

    def list_notes_after(self, folder: str, start_after: str) -> list[tuple[str, Optional[float]]]:
        self._count("list")
        found: list[tuple[str, Optional[float]]] = []
        with _mapped("list", folder, _FOLDER):
            path = self._existing_folder("list", folder) / folder
            try:
                names = os.listdir(path)  # names first: a stat only for those after start_after
            except FileNotFoundError:
                return []
            for name in names:
                if _is_own_temp(name) or folder + name <= start_after:
                    continue
                try:
                    stat = os.stat(path / name)
                except FileNotFoundError:
                    continue  # deleted while we listed
                if S_ISREG(stat.st_mode):  # objects only, as a bucket lists them: no sub-folder
                    found.append((folder + name, stat.st_mtime))
        return sorted(found)

    @contextlib.contextmanager
    def open_stream(self, name: str, version: Version) -> Iterator[Iterator[bytes]]:
        self._count("download")
        path = self._existing_folder("download", name) / name
        with _mapped("download", name, READ):
            source = open(path, "rb")
        try:
            # Files are replaced by rename, never rewritten in place: the open file is
            # the version whose fingerprint it has, to the end.
            if _fingerprint(os.fstat(source.fileno())) != version:
                raise ObjectChanged("download", name, "changed since it was listed")
            yield self._chunks(name, source)
        finally:
            source.close()

    @staticmethod
    def _chunks(name: str, source: BinaryIO) -> Iterator[bytes]:
        while True:
            with _mapped("download", name, READ):
                chunk = source.read(STREAM_CHUNK)
            if not chunk:
                return
            yield chunk

    def signed_url(self, name: str, expires_seconds: int) -> str:
        raise SigningUnavailable(
            "sign", self._key(name),
            "a local folder cannot sign URLs (PACKAGE_FILES=redirect needs STORAGE_BACKEND=gcs or s3)",
        )
