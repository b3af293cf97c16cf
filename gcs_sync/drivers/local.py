"""A plain folder acting as the bucket: the dev default and the fastest test double.

Writes are atomic: a dot-prefixed temporary file, then a hard link (create-only: fails if
the name exists) or a rename (overwrite). Its own temporary files are never listed.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from stat import S_ISREG
from typing import Mapping, Optional

from gcs_sync.errors import (
    BucketNotFound,
    ObjectChanged,
    ObjectExists,
    ObjectNotFound,
    StorageError,
    StoragePermissionDenied,
)
from gcs_sync.files import TEMP_SUFFIX, copy_hashing, fingerprint, sha256_of, temp_name
from gcs_sync.drivers.base import MARKER_NAME, FileStoreDriver, RemoteObject


def _sha256_or_none(path: Path) -> Optional[str]:
    try:
        return sha256_of(path)
    except FileNotFoundError:
        return None  # removed meanwhile: not the same upload
    except OSError as exc:
        raise StorageError("upload", path.name, f"{type(exc).__name__}: {exc}") from exc


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
            raise BucketNotFound(operation, name, f"bucket folder {self._root} does not exist")
        return self._folder

    def list_objects(self) -> dict[str, RemoteObject]:
        self._count("list")
        folder = self._existing_folder("list", self.url)
        found: dict[str, RemoteObject] = {}
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return {}  # the prefix folder appears with the first upload
        except OSError as exc:
            raise StorageError("list", self.url, f"{type(exc).__name__}: {exc}") from exc
        for entry in entries:
            if _is_own_temp(entry.name):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                stat = entry.stat()
            except FileNotFoundError:
                continue  # deleted while we listed: simply not there
            except OSError as exc:
                raise StorageError("list", entry.name, f"{type(exc).__name__}: {exc}") from exc
            found[entry.name] = RemoteObject(entry.name, fingerprint(stat), stat.st_size)
        return found

    def check_bucket(self) -> None:
        self._count("check")
        folder = self._existing_folder("list", self.url)
        try:
            with os.scandir(folder):
                pass
        except FileNotFoundError:
            return  # the prefix folder appears with the first upload
        except PermissionError as exc:
            raise StoragePermissionDenied("list", self.url, f"{type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            raise StorageError("list", self.url, f"{type(exc).__name__}: {exc}") from exc

    def stat(self, name: str) -> Optional[RemoteObject]:
        self._count("stat")
        path = self._existing_folder("stat", name) / name
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError("stat", name, f"{type(exc).__name__}: {exc}") from exc
        if not S_ISREG(stat.st_mode):
            return None  # a folder is not an object, as in the listing
        return RemoteObject(name, fingerprint(stat), stat.st_size)

    def download(self, name: str, destination: Path, version: str, listed_sha256: Optional[str] = None) -> str:
        self._count("download")
        source = self._existing_folder("download", name) / name
        try:
            with open(source, "rb") as src:
                if fingerprint(os.fstat(src.fileno())) != version:
                    raise ObjectChanged("download", name, "changed since it was listed")
                with open(destination, "wb") as dst:
                    return copy_hashing(src, dst).sha256
        except FileNotFoundError as exc:
            raise ObjectNotFound("download", name, f"{type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            raise StorageError("download", name, f"{type(exc).__name__}: {exc}") from exc

    def _write(
        self, name: str, source: Path, *, create_only: bool, if_version: Optional[str], metadata: Mapping[str, str],
    ) -> RemoteObject:
        # A folder keeps no metadata: no sha256, no upload token (a write here cannot
        # lose its reply, so the token is never needed).
        self._count("upload")
        folder = self._existing_folder("upload", name)
        target = folder / name
        temp = folder / temp_name(name)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, temp)
            if create_only:
                os.link(temp, target)  # atomic, and fails if the name exists
            elif if_version is not None:
                # Check, then replace: not atomic, as the conditional delete below.
                if self._version_of(target) != if_version:
                    raise ObjectChanged("upload", name, "replaced or deleted since it was read")
                os.replace(temp, target)
            else:
                os.replace(temp, target)
            stat = target.stat()
            return RemoteObject(name, fingerprint(stat), stat.st_size)
        except FileExistsError as exc:
            raise ObjectExists("upload", name, "an object of this name is already in the bucket") from exc
        except OSError as exc:
            raise StorageError("upload", name, f"{type(exc).__name__}: {exc}") from exc
        finally:
            temp.unlink(missing_ok=True)

    def look_once(self, name: str, sha256: Optional[str]) -> Optional[RemoteObject]:
        found = self.stat(name)
        if found is None or sha256 is None:
            return found
        # No metadata here: the bytes say whether it is the same upload.
        return dataclasses.replace(found, sha256=_sha256_or_none(self._folder / name))

    @staticmethod
    def _version_of(path: Path) -> Optional[str]:
        try:
            return fingerprint(path.stat())
        except FileNotFoundError:
            return None

    def delete(self, name: str, if_version: Optional[str] = None) -> None:
        # With if_version this is check-then-act, not atomic as on GCS and S3: a file
        # replaced by another process in between is deleted. Acceptable for a dev store.
        self._count("delete")
        folder = self._existing_folder("delete", name)
        try:
            if if_version is not None:
                try:
                    current = fingerprint((folder / name).stat())
                except FileNotFoundError:
                    return
                if current != if_version:
                    raise ObjectChanged("delete", name, "replaced since it was listed")
            (folder / name).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError("delete", name, f"{type(exc).__name__}: {exc}") from exc

    def put_note(self, name: str, data: bytes, if_version: Optional[str] = None) -> str:
        self._count("upload")
        note = self._existing_folder("upload", name) / name
        temp = note.with_name(temp_name(note.name))
        try:
            note.parent.mkdir(parents=True, exist_ok=True)
            temp.write_bytes(data)
            # Check, then replace: not atomic, as the conditional delete (dev only).
            if if_version is not None and self._version_of(note) != if_version:
                raise ObjectChanged("upload", name, "replaced or deleted since it was read")
            os.replace(temp, note)
            return fingerprint(note.stat())
        except OSError as exc:
            raise StorageError("upload", name, f"{type(exc).__name__}: {exc}") from exc
        finally:
            temp.unlink(missing_ok=True)

    def read_note(self, name: str) -> Optional[bytes]:
        self._count("download")
        try:
            return (self._existing_folder("download", name) / name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError("download", name, f"{type(exc).__name__}: {exc}") from exc

    def list_notes(self, folder: str) -> list[str]:
        self._count("list")
        try:
            entries = os.listdir(self._existing_folder("list", folder) / folder)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError("list", folder, f"{type(exc).__name__}: {exc}") from exc
        return [folder + entry for entry in entries if not _is_own_temp(entry)]

    def touch_marker(self) -> None:
        self._count("upload")
        marker = self._existing_folder("upload", MARKER_NAME) / MARKER_NAME
        temp = marker.with_name(temp_name(marker.name))
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            temp.write_bytes(self.new_marker_content())
            os.replace(temp, marker)  # a new inode: a new version
        except OSError as exc:
            raise StorageError("upload", MARKER_NAME, f"{type(exc).__name__}: {exc}") from exc
        finally:
            temp.unlink(missing_ok=True)
