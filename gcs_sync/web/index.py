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

What it holds per file is a few bytes: the worker's packed entries (``tracked.py``) are
shared with the sync, and the index keeps positions in them by project, and which are
listed; an ``IndexedFile`` is made for the projects asked for.
"""

from __future__ import annotations

import array
import collections
import dataclasses
import functools
import logging
import os
import threading
from typing import Iterable, Iterator, Mapping, Optional, Protocol

from pypiserver.core import PkgFile, normalize_pkgname
from pypiserver.pkg_helpers import guess_pkgname_and_version, parse_version, wheel_file_re

from gcs_sync.files import fingerprint
from gcs_sync.records.record import METADATA_SUFFIX, FileRecord
from gcs_sync.sync.folder import PackageFolder
from gcs_sync.sync.heap import collector_paused, keep_long_lived
from gcs_sync.sync.state import CATALOGUED, Entry, StateCursor, StateRead, SyncedFile
from gcs_sync.sync.tracked import EntriesView, PackedEntries, too_many_changes


class StateSource(Protocol):
    """Where the index reads the state: the worker's ``TrackedState`` (the packed entries
    are then held once per worker), or a ``StateFile`` of its own."""

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


# Built file objects kept for the projects asked for most recently, at most about this
# many files in all: beside them the index holds only positions in the packed state (the
# worker's own, shared with the sync), so its memory does not grow without bound with the
# projects clients have asked for.
PROJECT_CACHE_FILES = 20_000


@dataclasses.dataclass(frozen=True)
class _Listing:
    """What the index lists, swapped whole on a rebuild (readers keep the one they took):
    the state's packed entries at the rebuild (``tracked.PackedEntries``) and which of
    them are listed (None: all), where each project's files (PEP 503 name) are among
    them, the entries changed since (None: not listed) by name and by project, the listed
    files' count by project (its keys: the projects listed), and the projects built so
    far (their ``IndexedFile``s, least recently asked first). Per file, a few bytes."""

    base: PackedEntries
    listed: Optional[bytearray]
    base_projects: dict[str, array.array]
    changed: dict[str, Optional[SyncedFile]]
    changed_by_project: dict[str, set[str]]
    counts: dict[str, int]
    built: "collections.OrderedDict[str, _Project]"

    @classmethod
    def empty(cls) -> "_Listing":
        return cls(PackedEntries.empty(), None, {}, {}, {}, {}, collections.OrderedDict())

    def entry(self, name: str) -> Optional[SyncedFile]:
        """The listed file's entry; None if it is not listed."""
        if name in self.changed:
            return self.changed[name]
        position = self.base.find(name)
        if position < 0 or (self.listed is not None and not self.listed[position]):
            return None
        return self.base.entry_at(position)


@dataclasses.dataclass(frozen=True)
class _Project:
    packages: tuple[IndexedFile, ...]  # in name order
    by_name: dict[str, IndexedFile]


class PackageIndex:
    """Which files are listed is known for every file (O(files) at a rebuild: one name
    parse each); a project's ``IndexedFile``s are built on its first request, O(that
    project), and kept for the projects asked for most recently (``PROJECT_CACHE_FILES``,
    or twice the largest project kept). A download builds at most its file's object; a
    walk over every file (pypiserver's ``/packages/`` page, its XML-RPC search) builds
    each project's objects for that walk."""

    def __init__(self, folder: PackageFolder, state: StateSource, hash_algo: Optional[str]) -> None:
        self._folder = folder
        self._root = str(folder.path)  # one string, shared by every IndexedFile
        self._state = state
        self._hash_algo = hash_algo
        # Digests in another algorithm than the state's sha256 are computed from the file,
        # once, and kept on its object (backend.digest): then every project built is kept.
        self._keep_every_project = hash_algo not in (None, "sha256")
        self._cursor: Optional[StateCursor] = None
        # Refreshes run one at a time, and never wait for a lookup. A lookup waits only to
        # build a project, or while a refresh applies a few changes (_apply): the two
        # hold _build_lock, so a project is never built from a half-applied change. A
        # rebuild makes a new _Listing aside and swaps it in.
        self._refresh_lock = threading.Lock()
        self._build_lock = threading.Lock()
        self._listing = _Listing.empty()
        self._count = 0  # files listed
        self._built_files = 0  # IndexedFiles in _listing.built
        self._built_sizes: collections.Counter[int] = collections.Counter()  # projects in it, by file count
        self._largest_built = 0  # files of the largest project in it
        self._not_held = 0  # listed files whose bytes are in the bucket only (catalogued)

    def refresh(self) -> None:
        with self._refresh_lock:
            read = self._state.read(self._cursor)
            if read.files is not None:
                with collector_paused():
                    self._rebuild(read.files)
                keep_long_lived(len(read.files))
            elif read.entries:
                self._apply(read.entries)
                listing = self._listing
                if too_many_changes(len(listing.changed), len(listing.base)):
                    # Made again from the state's own packed entries (O(files), once per a
                    # fraction of them changed): the changes would pile up as objects.
                    read = self._state.read()
                    assert read.files is not None  # (a read without a cursor is whole)
                    with collector_paused():
                        self._rebuild(read.files)
            self._cursor = read.cursor

    # -- reading ---------------------------------------------------------------------

    def get(self, filename: str) -> Optional[IndexedFile]:
        """The listed file of that name: O(1), whatever the size of its project (one
        object built, if its project is not)."""
        listing = self._listing
        entry = listing.entry(filename)
        project = _project_of(filename) if entry is not None else None
        if entry is None or project is None:
            return None
        built = listing.built.get(project)
        if built is None and self._keep_every_project:
            built = self._project(listing, project)
        pkg = built.by_name.get(filename) if built is not None else None
        # (Not in a built project: not built, or put there since by a change being applied.)
        return pkg if pkg is not None else self._package(filename, entry)

    def metadata_file(self, filename: str) -> Optional[PkgFile]:
        """The core metadata file (PEP 658) served as ``filename`` (``<package file>.metadata``),
        as a PkgFile pypiserver's download route can serve (``root`` is the metadata folder):
        only for a listed file whose record names a metadata digest, and once the metadata
        file is in place (one ``stat``)."""
        if not filename.endswith(METADATA_SUFFIX):
            return None
        package = filename[: -len(METADATA_SUFFIX)]
        pkg = self.get(package)
        record = pkg.record if pkg is not None else None
        if pkg is None or record is None or not record.metadata_sha256:
            return None
        path = self._folder.metadata_path(package)
        if not path.is_file():
            return None
        return PkgFile(pkgname=pkg.pkgname, version=pkg.version, fn=str(path),
                       root=str(path.parent), relfn=path.name)

    def all_packages(self, first: Optional[str] = None) -> Iterator[IndexedFile]:
        """Every file, project by project; with ``first`` (the file pypiserver's download
        route asks for, and looks for among them by name) that file alone, if listed: a
        download, or a 404, is O(1), not a walk over every file.

        Files of projects not built are made for this walk only, not kept (unless digests
        are computed here: ``_keep_every_project``)."""
        listing = self._listing
        if first is not None:
            leading = self.get(first)
            if leading is not None:
                yield leading
            return
        for project in list(listing.counts):  # a copy: a refresh may change the dict
            built = listing.built.get(project)
            if built is None:
                built = self._project(listing, project) if self._keep_every_project else \
                    self._build(listing, project)
            yield from built.packages

    def project_packages(self, project: str) -> tuple[IndexedFile, ...]:
        listing = self._listing
        normalized = normalize_pkgname(project)  # a client's spelling: not kept in _normalized's cache
        if normalized not in listing.counts:
            return ()
        return self._project(listing, normalized).packages

    def projects(self) -> list[str]:
        return list(self._listing.counts)

    def __len__(self) -> int:
        return self._count

    def not_held(self) -> int:
        """How many listed files are not held here (catalogued: a mirror's fill has not
        brought them yet, or PACKAGE_FILES is cache or redirect)."""
        return self._not_held

    def _project(self, listing: _Listing, project: str) -> _Project:
        """The project's files, built on its first request (O(that project)) and kept
        while it is among those asked for most recently."""
        built = listing.built.get(project)
        if built is not None:
            try:
                listing.built.move_to_end(project)  # asked for again: dropped last
            except KeyError:
                pass  # dropped meanwhile by a change to it: this build is still the one asked for
            return built
        with self._build_lock:
            built = listing.built.get(project)
            if built is not None:
                return built
            built = self._build(listing, project)
            if listing is self._listing:  # not one a rebuild has replaced meanwhile
                listing.built[project] = built
                self._built_files += len(built.packages)
                self._built_sizes[len(built.packages)] += 1
                self._largest_built = max(self._largest_built, len(built.packages))
                if not self._keep_every_project:
                    # At least twice the largest project kept: one over the bound alone
                    # would otherwise be built again at nearly every request for it.
                    while self._built_files > max(PROJECT_CACHE_FILES, 2 * self._largest_built) \
                            and len(listing.built) > 1:
                        _, dropped = listing.built.popitem(last=False)
                        self._dropped(dropped)
            return built

    def _build(self, listing: _Listing, project: str) -> _Project:
        # Without the build lock in a walk over every file (all_packages), so a change may
        # be applied meanwhile: the names first (each once), then each one's entry as it is
        # now, as a lookup (``_Listing.entry``) would give it.
        base, listed, changed = listing.base, listing.listed, listing.changed
        positions = {}
        for position in listing.base_projects.get(project, ()):
            if listed is None or listed[position]:
                positions[base.name_at(position)] = position
        for name in tuple(listing.changed_by_project.get(project, ())):  # (a copy, made at once)
            positions[name] = -1
        packages = []
        for name in sorted(positions):
            # A name once changed stays in ``changed``: its entry there is the current one.
            entry = changed[name] if name in changed else base.entry_at(positions[name])
            pkg = self._package(name, entry) if entry is not None else None
            if pkg is not None:
                packages.append(pkg)
        return _Project(tuple(packages), {pkg.relfn: pkg for pkg in packages})

    # -- updating --------------------------------------------------------------------

    def _rebuild(self, files: Mapping[str, SyncedFile]) -> None:
        # Built aside and swapped in, so readers see the old index or the new one.
        if isinstance(files, EntriesView):
            base, changes = files.base, files.changes
        else:  # a StateFile's dict
            base, changes = PackedEntries.build(files.items()), {}
        # A catalogued state needs no look at the folder (no stat per file).
        all_catalogued = base.catalogued == len(base) and all(
            entry is None or entry.local_fingerprint == CATALOGUED for entry in changes.values())
        present = {} if all_catalogued else self._folder.scan()
        listed = None if all_catalogued else bytearray(len(base))
        base_projects: dict[str, array.array] = {}
        counts: dict[str, int] = {}
        count = not_held = 0
        for position, name in enumerate(base.names()):
            project = _project_of(name)
            if project is None:
                continue  # not a package file name pypiserver would list
            base_projects.setdefault(project, array.array("I")).append(position)
            if name in changes:
                continue  # its entry now: below
            catalogued = base.is_catalogued(position)
            if listed is not None:
                if not catalogued and present.get(name) != base.fingerprint_at(position):
                    continue
                listed[position] = 1
            counts[project] = counts.get(project, 0) + 1
            count += 1
            not_held += catalogued
        changed: dict[str, Optional[SyncedFile]] = {}
        changed_by_project: dict[str, set[str]] = {}
        for name, entry in changes.items():
            project = _project_of(name)
            if project is None:
                continue
            changed_by_project.setdefault(project, set()).add(name)
            catalogued = entry is not None and entry.local_fingerprint == CATALOGUED
            if entry is None or not (catalogued or present.get(name) == entry.local_fingerprint):
                changed[name] = None
                continue
            changed[name] = entry
            counts[project] = counts.get(project, 0) + 1
            count += 1
            not_held += catalogued
        with self._build_lock:
            self._listing = _Listing(base, listed, base_projects, changed, changed_by_project, counts,
                                     collections.OrderedDict())
            self._count = count
            self._built_files = self._largest_built = 0
            self._built_sizes = collections.Counter()
            self._not_held = not_held
        log.debug("index of %s rebuilt: %d files in %d projects", self._folder.path, count, len(counts))

    def _apply(self, entries: Iterable[Entry]) -> None:
        with self._build_lock:
            listing = self._listing
            for name, entry in entries:
                self._remove(listing, name)
                if entry is not None and self._is_in_place(name, entry):
                    self._put(listing, name, entry)

    def _is_in_place(self, name: str, entry: SyncedFile) -> bool:
        if entry.local_fingerprint == CATALOGUED:
            return True  # served from the bucket: nothing to look for here
        try:
            return fingerprint(os.stat(self._folder.file_path(name))) == entry.local_fingerprint
        except FileNotFoundError:
            return False  # removed again since: a later journal line says so

    def _put(self, listing: _Listing, name: str, entry: SyncedFile) -> None:
        """List ``name`` (not listed now: ``_remove`` came first)."""
        project = _project_of(name)
        if project is None:
            return
        listing.changed[name] = entry
        listing.changed_by_project.setdefault(project, set()).add(name)
        listing.counts[project] = listing.counts.get(project, 0) + 1
        self._count += 1
        self._not_held += entry.local_fingerprint == CATALOGUED
        self._forget_built(listing, project)

    def _remove(self, listing: _Listing, name: str) -> None:
        project = _project_of(name)
        if project is None:
            return  # never listed
        entry = listing.entry(name)
        listing.changed[name] = None
        listing.changed_by_project.setdefault(project, set()).add(name)
        if entry is None:
            return
        self._count -= 1
        self._not_held -= entry.local_fingerprint == CATALOGUED
        remaining = listing.counts.get(project, 0) - 1
        if remaining > 0:
            listing.counts[project] = remaining
        else:
            listing.counts.pop(project, None)
        self._forget_built(listing, project)

    def _forget_built(self, listing: _Listing, project: str) -> None:
        dropped = listing.built.pop(project, None)
        if dropped is not None:
            self._dropped(dropped)

    def _dropped(self, dropped: _Project) -> None:
        size = len(dropped.packages)
        self._built_files -= size
        self._built_sizes[size] -= 1
        if not self._built_sizes[size]:
            del self._built_sizes[size]
            if size == self._largest_built:  # O(distinct sizes kept), not O(projects kept)
                self._largest_built = max(self._built_sizes, default=0)

    def _package(self, name: str, entry: SyncedFile) -> Optional[IndexedFile]:
        parsed = guess_pkgname_and_version(name)
        if parsed is None:
            return None
        pkgname, version = parsed
        remote_version, sha256, record = entry.parts()
        if record is not None and (record.filename != name or (sha256 and record.sha256 != sha256)):
            record = None  # a stale record, of an earlier file of that name: not these bytes
        pkg = IndexedFile(
            pkgname=pkgname, version=version, fn=None, root=self._root, relfn=name,
            sha256=sha256 or (record.sha256 if record is not None else None),
            size=record.size if record is not None else _fingerprint_size(entry.local_fingerprint),
            record=record, remote_version=remote_version,
            held=entry.local_fingerprint != CATALOGUED,
        )
        if self._hash_algo == "sha256" and sha256:
            pkg.digest = f"sha256={sha256}"  # what pypiserver would compute, already known
        return pkg


def _project_of(name: str) -> Optional[str]:
    """The PEP 503 name of the project a file name belongs to, as pypiserver guesses it;
    None if it guesses none (pypiserver would not list the file)."""
    if name.endswith(".whl") and "/" not in name:
        # What pypiserver's guess does for a wheel's base name, without its calls around
        # the match: a rebuild asks this of every file (a third less at 50,000 files).
        match = _match_wheel(name)
        return None if match is None else _normalized(match.group("name"))
    parsed = guess_pkgname_and_version(name)
    return None if parsed is None else _normalized(parsed[0])


_match_wheel = wheel_file_re.match


def _fingerprint_size(value: str) -> Optional[int]:
    """The size in a ``files.fingerprint`` ("inode:size:mtime_ns"): the file's size when the
    state recorded it, which the index has checked is the file in place."""
    try:
        return int(value.split(":")[1])
    except (IndexError, ValueError):
        return None
