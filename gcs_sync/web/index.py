"""The in-memory package index of one worker: what pypiserver's routes read.

Built from the synced state (``state.py``), never from the bucket and never by hashing:
each file's sha256 was computed once, when it was uploaded or first pulled. Before
answering, the index asks the state what changed since it last looked: two ``stat``
calls when nothing did, the new journal lines when something did (O(changes)), a full
read only after a compaction. A project's page then costs O(that project's files).

Only files present in the folder with the fingerprint the state recorded are listed: the
index never offers a file that is missing, partial or not yet recorded.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Iterable, Iterator, Optional

from pypiserver.core import PkgFile, normalize_pkgname
from pypiserver.pkg_helpers import guess_pkgname_and_version

from gcs_sync.files import fingerprint
from gcs_sync.sync.folder import PackageFolder
from gcs_sync.sync.state import Entry, StateCursor, StateFile, SyncedFile

log = logging.getLogger("gcs_sync.index")  # the name operators' log queries know


class PackageIndex:
    def __init__(self, folder: PackageFolder, state: StateFile, hash_algo: Optional[str]) -> None:
        self._folder = folder
        self._state = state
        self._hash_algo = hash_algo
        self._cursor: Optional[StateCursor] = None
        # Refreshes run one at a time; lookups never wait for them: _files is changed in
        # place (single dict operations are atomic), project tuples are replaced whole.
        self._refresh_lock = threading.Lock()
        self._files: dict[str, PkgFile] = {}
        self._names_by_project: dict[str, set[str]] = {}
        self._projects: dict[str, tuple[PkgFile, ...]] = {}

    def refresh(self) -> None:
        with self._refresh_lock:
            read = self._state.read(self._cursor)
            if read.files is not None:
                self._rebuild(read.files)
            elif read.entries:
                self._apply(read.entries)
            self._cursor = read.cursor

    # -- reading ---------------------------------------------------------------------

    def get(self, filename: str) -> Optional[PkgFile]:
        return self._files.get(filename)

    def all_packages(self, first: Optional[str] = None) -> Iterator[PkgFile]:
        """Every file; ``first`` (a requested filename) leads, so a caller that stops at
        the match, like pypiserver's download route, does O(1) work instead of O(all)."""
        leading = self._files.get(first) if first else None
        if leading is not None:
            yield leading
        for pkg in list(self._files.values()):  # a copy: a refresh may change the dict
            if pkg is not leading:
                yield pkg

    def project_packages(self, project: str) -> tuple[PkgFile, ...]:
        return self._projects.get(normalize_pkgname(project), ())

    def projects(self) -> list[str]:
        return list(self._projects)

    def __len__(self) -> int:
        return len(self._files)

    # -- updating --------------------------------------------------------------------

    def _rebuild(self, files: dict[str, SyncedFile]) -> None:
        # Built aside and swapped in, so readers see the old index or the new one.
        present = self._folder.scan()
        by_name: dict[str, PkgFile] = {}
        names_by_project: dict[str, set[str]] = {}
        for name, entry in files.items():
            pkg = self._package(name, entry) if present.get(name) == entry.local_fingerprint else None
            if pkg is not None:
                by_name[name] = pkg
                names_by_project.setdefault(pkg.pkgname_norm, set()).add(name)
        projects = {
            project: tuple(by_name[name] for name in sorted(names))
            for project, names in names_by_project.items()
        }
        self._files, self._names_by_project, self._projects = by_name, names_by_project, projects
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
        try:
            return fingerprint(os.stat(self._folder.file_path(name))) == entry.local_fingerprint
        except FileNotFoundError:
            return False  # removed again since: a later journal line says so

    def _put(self, name: str, entry: SyncedFile) -> Optional[str]:
        pkg = self._package(name, entry)
        if pkg is None:
            return None
        self._files[name] = pkg
        self._names_by_project.setdefault(pkg.pkgname_norm, set()).add(name)
        return pkg.pkgname_norm

    def _package(self, name: str, entry: SyncedFile) -> Optional[PkgFile]:
        parsed = guess_pkgname_and_version(name)
        if parsed is None:
            return None
        pkgname, version = parsed
        pkg = PkgFile(
            pkgname=pkgname, version=version, fn=str(self._folder.file_path(name)),
            root=str(self._folder.path), relfn=name,
        )
        if self._hash_algo == "sha256" and entry.sha256:
            pkg.digest = f"sha256={entry.sha256}"  # what pypiserver would compute, already known
        return pkg

    def _remove(self, name: str) -> Optional[str]:
        pkg = self._files.pop(name, None)
        if pkg is None:
            return None
        self._names_by_project.get(pkg.pkgname_norm, set()).discard(name)
        return pkg.pkgname_norm

    def _project_tuple(self, project: str) -> tuple[PkgFile, ...]:
        return tuple(self._files[name] for name in sorted(self._names_by_project[project]))
