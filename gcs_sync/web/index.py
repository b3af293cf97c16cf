"""The in-memory package index of one worker: what pypiserver's routes read.

Built from the synced state (``state.py``), never from the bucket and never by hashing:
each file's sha256 was computed once, when it was uploaded or first pulled. Before
answering, the index asks the state what changed since it last looked: two ``stat``
calls when nothing did, the new journal lines when something did (O(changes)), a full
read only after a compaction. A project's page then costs O(that project's files).

Only files present in the folder with the fingerprint the state recorded are listed: the
index never offers a file that is missing, partial or not yet recorded. Entries the sync
knows from the bucket's records alone (``local_fingerprint == CATALOGUED``: PACKAGE_FILES
cache and redirect, or a mirror whose fill has not brought them yet) are listed too,
without any look at the folder (``IndexedFile.held`` is false): their bytes come from the
bucket (``package_files.py``).

Each listed file is an ``IndexedFile``: pypiserver's ``PkgFile`` plus what the simple API
(``simple_api.py``) shows of it, all known from the state: its sha256, its size and its
metadata record (``records/record.py``), when the state has one for these bytes.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from typing import Iterable, Iterator, Optional, Protocol

from pypiserver.core import PkgFile, normalize_pkgname
from pypiserver.pkg_helpers import guess_pkgname_and_version, parse_version

from gcs_sync.files import fingerprint
from gcs_sync.records.record import METADATA_SUFFIX, FileRecord
from gcs_sync.sync.folder import PackageFolder
from gcs_sync.sync.heap import collector_paused, keep_long_lived
from gcs_sync.sync.state import CATALOGUED, Entry, StateCursor, StateRead, SyncedFile


class StateSource(Protocol):
    """Where the index reads the state: the worker's ``TrackedState`` (the entries are then
    held once per worker), or a ``StateFile`` of its own."""

    def read(self, since: Optional[StateCursor] = None) -> StateRead: ...

log = logging.getLogger("gcs_sync.index")  # the name operators' log queries know


@functools.lru_cache(maxsize=65536)
def _normalized(pkgname: str) -> str:
    """PEP 503's name, worked out once per spelling (a project has many files)."""
    return normalize_pkgname(pkgname)


class IndexedFile(PkgFile):
    """A listed package file, with what the state knows of it (nothing read on a request).

    Its full path (``fn``) is worked out when asked for, and its parsed version on first
    use, not at build: at 50,000 files they would be 20 MB per worker, and a request asks
    for a few of them."""

    __slots__ = ("sha256", "size", "record", "remote_version", "held", "_parsed")
    _parsed: Optional[tuple]

    @property
    def fn(self) -> Optional[str]:
        return None if self.root is None or self.relfn is None else os.path.join(self.root, self.relfn)

    @fn.setter
    def fn(self, value: Optional[str]) -> None:
        pass  # always root/relfn (PkgFile.__init__ sets it)

    @property
    def parsed_version(self) -> tuple:
        # Parsed on the first page that sorts it, then kept: only files someone asks for.
        if self._parsed is None:
            self._parsed = parse_version(self.version)
        return self._parsed

    @parsed_version.setter
    def parsed_version(self, value: tuple) -> None:
        pass  # parsed when asked (PkgFile.__init__ sets it)

    def __init__(self, pkgname: str, version: str, fn: Optional[str], root: str, relfn: str, *,
                 sha256: Optional[str], size: Optional[int], record: Optional[FileRecord],
                 remote_version: Optional[str] = None, held: bool = True) -> None:
        # PkgFile's own __init__, without what it would compute for every file of a cold
        # start and keep (the parsed version, the path: properties here); same attributes.
        # (setattr: mypy does not see the slots PkgFile declares as a list.)
        for slot, value in (("pkgname", pkgname), ("pkgname_norm", _normalized(pkgname)), ("version", version),
                            ("root", root), ("relfn", relfn), ("relfn_unix", relfn.replace("\\", "/")),
                            ("replaces", None), ("digest", None), ("digester", None)):
            setattr(self, slot, value)
        self._parsed = None
        self.sha256 = sha256
        self.size = size  # the record's, else the size in the fingerprint the state recorded
        self.record = record  # None: not known yet (or it describes other bytes)
        # The bucket object's version the state recorded: what a cache reads (package_files.py).
        self.remote_version = remote_version
        self.held = held  # in the folder; else catalogued, its bytes in the bucket


class PackageIndex:
    def __init__(self, folder: PackageFolder, state: StateSource, hash_algo: Optional[str]) -> None:
        self._folder = folder
        self._root = str(folder.path)  # one string, shared by every IndexedFile
        self._state = state
        self._hash_algo = hash_algo
        self._cursor: Optional[StateCursor] = None
        # Refreshes run one at a time; lookups never wait for them: _files is changed in
        # place (single dict operations are atomic), project tuples are replaced whole.
        self._refresh_lock = threading.Lock()
        self._files: dict[str, IndexedFile] = {}
        self._names_by_project: dict[str, set[str]] = {}
        self._projects: dict[str, tuple[IndexedFile, ...]] = {}
        self._not_held = 0  # listed files whose bytes are in the bucket only (catalogued)

    def refresh(self) -> None:
        with self._refresh_lock:
            read = self._state.read(self._cursor)
            if read.files is not None:
                with collector_paused():
                    self._rebuild(read.files)
                keep_long_lived(len(self._files))
            elif read.entries:
                self._apply(read.entries)
            self._cursor = read.cursor

    # -- reading ---------------------------------------------------------------------

    def get(self, filename: str) -> Optional[IndexedFile]:
        return self._files.get(filename)

    def metadata_file(self, filename: str) -> Optional[PkgFile]:
        """The core metadata file (PEP 658) served as ``filename`` (``<package file>.metadata``),
        as a PkgFile pypiserver's download route can serve (``root`` is the metadata folder):
        only for a listed file whose record names a metadata digest, and once the metadata
        file is in place (one ``stat``)."""
        if not filename.endswith(METADATA_SUFFIX):
            return None
        package = filename[: -len(METADATA_SUFFIX)]
        pkg = self._files.get(package)
        record = pkg.record if pkg is not None else None
        if pkg is None or record is None or not record.metadata_sha256:
            return None
        path = self._folder.metadata_path(package)
        if not path.is_file():
            return None
        return PkgFile(pkgname=pkg.pkgname, version=pkg.version, fn=str(path),
                       root=str(path.parent), relfn=path.name)

    def all_packages(self, first: Optional[str] = None) -> Iterator[IndexedFile]:
        """Every file; ``first`` (a requested filename) leads, so a caller that stops at
        the match, like pypiserver's download route, does O(1) work instead of O(all)."""
        leading = self._files.get(first) if first else None
        if leading is not None:
            yield leading
        for pkg in list(self._files.values()):  # a copy: a refresh may change the dict
            if pkg is not leading:
                yield pkg

    def project_packages(self, project: str) -> tuple[IndexedFile, ...]:
        return self._projects.get(normalize_pkgname(project), ())

    def projects(self) -> list[str]:
        return list(self._projects)

    def __len__(self) -> int:
        return len(self._files)

    def not_held(self) -> int:
        """How many listed files are not held here (catalogued: a mirror's fill has not
        brought them yet, or PACKAGE_FILES is cache or redirect)."""
        return self._not_held

    # -- updating --------------------------------------------------------------------

    def _rebuild(self, files: dict[str, SyncedFile]) -> None:
        # Built aside and swapped in, so readers see the old index or the new one.
        # A catalogued state needs no look at the folder (no stat per file).
        present = {} if _all_catalogued(files) else self._folder.scan()
        by_name: dict[str, IndexedFile] = {}
        names_by_project: dict[str, set[str]] = {}
        for name, entry in files.items():
            listed = entry.local_fingerprint == CATALOGUED or present.get(name) == entry.local_fingerprint
            pkg = self._package(name, entry) if listed else None
            if pkg is not None:
                by_name[name] = pkg
                names_by_project.setdefault(pkg.pkgname_norm, set()).add(name)
        projects = {
            project: tuple(by_name[name] for name in sorted(names))
            for project, names in names_by_project.items()
        }
        self._files, self._names_by_project, self._projects = by_name, names_by_project, projects
        self._not_held = sum(1 for pkg in by_name.values() if not pkg.held)
        log.debug("index of %s rebuilt: %d files in %d projects", self._folder.path, len(by_name), len(projects))

    def _apply(self, entries: Iterable[Entry]) -> None:
        touched: set[Optional[str]] = set()
        for name, entry in entries:
            touched.add(self._remove(name))
            if entry is not None and self._is_in_place(name, entry):
                touched.add(self._put(name, entry))
        for project in {project for project in touched if project is not None}:
            if self._names_by_project.get(project):
                self._projects[project] = self._project_tuple(project)
            else:
                self._names_by_project.pop(project, None)
                self._projects.pop(project, None)

    def _is_in_place(self, name: str, entry: SyncedFile) -> bool:
        if entry.local_fingerprint == CATALOGUED:
            return True  # served from the bucket: nothing to look for here
        try:
            return fingerprint(os.stat(self._folder.file_path(name))) == entry.local_fingerprint
        except FileNotFoundError:
            return False  # removed again since: a later journal line says so

    def _put(self, name: str, entry: SyncedFile) -> Optional[str]:
        pkg = self._package(name, entry)
        if pkg is None:
            return None
        self._files[name] = pkg
        self._not_held += not pkg.held
        self._names_by_project.setdefault(pkg.pkgname_norm, set()).add(name)
        return pkg.pkgname_norm

    def _package(self, name: str, entry: SyncedFile) -> Optional[IndexedFile]:
        parsed = guess_pkgname_and_version(name)
        if parsed is None:
            return None
        pkgname, version = parsed
        record = entry.record
        if record is not None and (record.filename != name or (entry.sha256 and record.sha256 != entry.sha256)):
            record = None  # a stale record, of an earlier file of that name: not these bytes
        pkg = IndexedFile(
            pkgname=pkgname, version=version, fn=None, root=self._root, relfn=name,
            sha256=entry.sha256 or (record.sha256 if record is not None else None),
            size=record.size if record is not None else _fingerprint_size(entry.local_fingerprint),
            record=record, remote_version=entry.remote_version,
            held=entry.local_fingerprint != CATALOGUED,
        )
        if self._hash_algo == "sha256" and entry.sha256:
            pkg.digest = f"sha256={entry.sha256}"  # what pypiserver would compute, already known
        return pkg

    def _remove(self, name: str) -> Optional[str]:
        pkg = self._files.pop(name, None)
        if pkg is None:
            return None
        self._not_held -= not pkg.held
        self._names_by_project.get(pkg.pkgname_norm, set()).discard(name)
        return pkg.pkgname_norm

    def _project_tuple(self, project: str) -> tuple[IndexedFile, ...]:
        return tuple(self._files[name] for name in sorted(self._names_by_project[project]))


def _all_catalogued(files: dict[str, SyncedFile]) -> bool:
    return all(entry.local_fingerprint == CATALOGUED for entry in files.values())


def _fingerprint_size(value: str) -> Optional[int]:
    """The size in a ``files.fingerprint`` ("inode:size:mtime_ns"): the file's size when the
    state recorded it, which the index has checked is the file in place."""
    try:
        return int(value.split(":")[1])
    except (IndexError, ValueError):
        return None
