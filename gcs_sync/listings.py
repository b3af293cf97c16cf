"""Which entries of a folder, or of a bucket listing, are package files: the one rule of
what the index syncs and serves, for the sync and the operator's commands alike.

A package file is a regular file directly in the folder (no link, no sub-folder), or an
object directly under the prefix, whose name is a package filename
(``names.is_package_filename``). Everything else is skipped, and said why.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Container, Mapping, TypeVar

from gcs_sync.files import TEMP_SUFFIX, fingerprint
from gcs_sync.names import is_package_filename

T = TypeVar("T")

# The folder's own bookkeeping (state, lock): never a package, never reported.
CONTROL_FOLDER = ".gcs_sync"


@dataclasses.dataclass(frozen=True)
class LocalFile:
    name: str
    path: Path
    size: int
    fingerprint: str  # files.fingerprint: compares with the folder's last-synced state


@dataclasses.dataclass(frozen=True)
class FolderEntries:
    files: dict[str, LocalFile]  # the package files, by name
    skipped: list[tuple[str, str]]  # (name, why) of every other entry, sorted; folders end in "/"


def scan_package_folder(folder: Path) -> FolderEntries:
    """One pass over ``folder``. A file removed while it is read is simply not there.
    Raises OSError if the folder cannot be read."""
    files: dict[str, LocalFile] = {}
    skipped: list[tuple[str, str]] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name == CONTROL_FOLDER or (entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX)):
                continue  # the index's own bookkeeping and temporary files
            if entry.is_dir(follow_symlinks=False):
                skipped.append((entry.name + "/", "a folder: only files directly in the folder are packages"))
            elif not entry.is_file(follow_symlinks=False):
                skipped.append((entry.name, "not a regular file (a link or a special file)"))
            elif not is_package_filename(entry.name):
                skipped.append((entry.name, "not a package filename"))
            else:
                try:
                    stat = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                files[entry.name] = LocalFile(entry.name, Path(entry.path), stat.st_size, fingerprint(stat))
    return FolderEntries(files, sorted(skipped))


def split_listing(listing: Mapping[str, T], known: Container[str] = ()) -> tuple[dict[str, T], list[str]]:
    """A bucket listing's package objects, and the other names (sorted): never synced.
    Names in ``known`` passed this check before (the state's): not checked again, which is
    half the CPU of a full listing at 50,000 files."""
    packages: dict[str, T] = {}
    skipped: list[str] = []
    for name, obj in listing.items():
        if name in known or is_package_filename(name):
            packages[name] = obj
        else:
            skipped.append(name)
    return packages, sorted(skipped)
