"""The local package folder that pypiserver serves, and the writes made into it.

Every write goes to a dot-prefixed temporary file in the same folder and is renamed into
place, so a reader (pypiserver never lists dot names) sees a whole file or nothing. The
folder's own bookkeeping lives in the dot folder ``.gcs_sync/``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import BinaryIO, Iterator, Optional

from gcs_sync.files import TEMP_SUFFIX, copy_hashing, fingerprint, replacing, temp_name, write_atomically
from gcs_sync.listings import CONTROL_FOLDER, scan_package_folder
from gcs_sync.records.record import METADATA_SUFFIX, FileRecord

log = logging.getLogger("gcs_sync.folder")  # the name operators' log queries know

# A temp file unchanged for this long belongs to a process that died mid-write.
STALE_TEMP_SECONDS = 3600


@dataclasses.dataclass(frozen=True)
class StagedFile:
    """An upload written to a temp file, not yet visible: it becomes visible only once the
    bucket has it."""

    name: str
    path: Path
    sha256: str
    size: int
    # Its metadata record and core metadata file, computed before anything is stored
    # (``records.compute``); stored with the file, as part of the same upload.
    record: Optional[FileRecord] = None
    metadata: Optional[bytes] = None


class PackageFolder:
    def __init__(self, path: Path) -> None:
        self.path = Path(path).absolute()
        self.control = self.path / CONTROL_FOLDER
        self.control.mkdir(parents=True, exist_ok=True)
        # The core metadata files (PEP 658) of the package files, as the records name them.
        self.metadata_folder = self.control / "metadata"
        # Temp files by name: their fingerprint, and when this process first saw it.
        self._temps_seen: dict[str, tuple[str, float]] = {}

    def scan(self) -> dict[str, str]:
        """Package files by name, with their fingerprints (``listings``: the one rule of what
        is a package file). A file removed while the folder is read (the index reads it
        without the lock, while a sibling removes a file) is simply not there."""
        return {name: found.fingerprint for name, found in scan_package_folder(self.path).files.items()}

    def temp_path(self, name: str) -> Path:
        return self.path / temp_name(name)

    def stage(self, name: str, stream: BinaryIO) -> StagedFile:
        """Write an incoming upload to a temp file, hashing it on the way."""
        temp = self.temp_path(name)
        try:
            with open(temp, "wb") as out:
                copied = copy_hashing(stream, out)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return StagedFile(name, temp, copied.sha256, copied.size)

    @contextlib.contextmanager
    def replacing(self, name: str) -> Iterator[Path]:
        """A temp file that becomes ``name`` when the block ends without an error; it is
        removed in every case."""
        with replacing(self.path / name) as temp:
            yield temp

    @contextlib.contextmanager
    def scratch(self, name: str) -> Iterator[Path]:
        """A temp file for ``name``'s bytes that never becomes a package file (read once,
        then removed in every case): hidden in the control folder."""
        path = self.control / temp_name(name)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    def fingerprint(self, name: str) -> str:
        return fingerprint(self.file_path(name).stat())

    def install(self, temp: Path, name: str) -> str:
        """Make a complete temp file visible under ``name``; return its fingerprint."""
        target = self.path / name
        os.replace(temp, target)
        return fingerprint(target.stat())

    def remove(self, name: str) -> None:
        (self.path / name).unlink(missing_ok=True)

    def file_path(self, name: str) -> Path:
        return self.path / name

    def metadata_path(self, name: str) -> Path:
        """Where package file ``name``'s core metadata file is kept: ``<name>.metadata``, the
        name pypiserver's download route serves it under (``records.compute`` gives no
        metadata file to a name too long for that)."""
        return self.metadata_folder / f"{name}{METADATA_SUFFIX}"

    def write_metadata(self, name: str, data: bytes) -> None:
        """Keep ``data`` as package file ``name``'s core metadata file (temp, then rename:
        a reader sees the old file or the new one, never a part)."""
        self.metadata_folder.mkdir(exist_ok=True)
        write_atomically(self.metadata_path(name), data)

    def remove_metadata(self, name: str) -> None:
        self.metadata_path(name).unlink(missing_ok=True)

    def sweep_stale_temps(self) -> None:
        """Remove temp files left by a process that died mid-write, in the folder and in
        its control folder (a state file being written from a catalog snapshot, some 30 MB
        at 50,000 files, by a worker killed during its cold start): those this process
        has seen unchanged (same size, mtime and inode) for STALE_TEMP_SECONDS on its
        monotonic clock. Not by their age on the wall clock: a clock stepped forward would
        make a temp being written right now look old."""
        now = time.monotonic()
        seen, removed = {}, []
        for folder in (self.path, self.control):
            with os.scandir(folder) as entries:
                for entry in entries:
                    if not (entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX)):
                        continue
                    try:
                        # Other workers create and remove temps outside the folder lock.
                        current = fingerprint(entry.stat())
                    except FileNotFoundError:
                        continue
                    before = self._temps_seen.get(entry.path)
                    first_seen = before[1] if before is not None and before[0] == current else now
                    if now - first_seen > STALE_TEMP_SECONDS:
                        Path(entry.path).unlink(missing_ok=True)
                        removed.append(entry.name)
                    else:
                        seen[entry.path] = (current, first_seen)
        self._temps_seen = seen
        if removed:
            log.warning("removed %d stale temp files left by a crashed worker: %s", len(removed), removed)
