"""A worker's copy of the synced state (``state.py``), kept current by reading only what
changed, and held compactly: every worker holds every entry, and uses the few that a
request or a change asks about.

The entries of the last whole read are two bytes objects (``PackedEntries``): the names,
and each entry's local fingerprint and packed fields (``state.entry_payload``), one after
another in name order, found by a binary search. At 50,000 files that is about 12 MB,
where a dict of entry objects took 44 MB (26 MB packed one by one). An entry is made
into a ``SyncedFile`` when asked for (a microsecond), and not kept. What changed since
that read is a small dict beside it, packed with the rest once it grows.
"""

from __future__ import annotations

import array
import itertools
import operator
import struct
import threading
from typing import Iterable, Iterator, Mapping, Optional

from gcs_sync.sync.state import (
    CATALOGUED, PAYLOAD_PACKED, Entry, StateCursor, StateFile, StateRead, SyncedFile, entry_from_payload,
    entry_payload,
)

# Changes a TrackedState keeps for its readers (the index: it reads them at its next
# request, a few at a time) before the oldest are dropped; a reader further behind reads
# the whole state. They are objects: 4,096 are about 2 MB.
_MAX_CHANGE_LOG = 4_096
# The changed entries kept as objects beside the packed ones, at most: this fraction of
# them (a whole read: no more), and this many more (between whole reads).
_FOLD_FRACTION = 8
_FOLD_MIN_CHANGES = 1_024
# Before each entry's bytes: the length of its local fingerprint (UTF-8), and the kind of
# its payload (``state.entry_payload``).
_HEAD = struct.Struct("<HB")
_ENCODING = "utf-8"
_ERRORS = "surrogatepass"  # a name read from JSON may hold a lone surrogate; its bytes still sort as it does
_CATALOGUED_PACKED_HEAD = _HEAD.pack(0, PAYLOAD_PACKED)
_packed_of = object.__getattribute__  # (a SyncedFile's _packed, without its __getattr__)
_NAME_END = b"\n"  # after each name (package file names have no line break: names.py)
_NAME_END_TEXT = "\n"


def too_many_changes(changes: int, packed: int, whole: bool = False) -> bool:
    """Whether ``changes`` entries kept as objects beside ``packed`` ones are to be packed
    with them: past a fraction of them (right after a whole read, any more), or past that
    and _FOLD_MIN_CHANGES more (between whole reads)."""
    return changes > packed // _FOLD_FRACTION + (0 if whole else _FOLD_MIN_CHANGES)


class PackedEntries(Mapping[str, SyncedFile]):
    """Entries, immutable, in name order (UTF-8 bytes sort as their strings do): their
    names one after another in one bytes object, each ended by a line break (so all of
    them are one ``split`` away), and each one's local fingerprint and payload in another.
    A mapping, and by position: ``find`` a name's (a binary search), the name, the entry,
    its fingerprint and whether it is catalogued."""

    __slots__ = ("_names", "_name_starts", "_blob", "_starts", "_catalogued_flags", "catalogued", "_split")

    def __init__(self, names: bytes, name_starts: array.array, blob: bytes, starts: array.array,
                 catalogued_flags: bytes) -> None:
        self._names = names
        self._name_starts = name_starts  # where each name starts, and the end of the last (its line break)
        self._blob = blob
        self._starts = starts  # where each entry's bytes start, and the end of the last
        self._catalogued_flags = catalogued_flags  # 1 for an entry whose fingerprint is CATALOGUED
        self.catalogued = sum(catalogued_flags)
        # Whether every name is one split away: none holds a line break itself (a name an
        # older release took from the bucket might; it is still the state's).
        self._split = names.count(_NAME_END) == len(starts) - 1

    @classmethod
    def empty(cls) -> "PackedEntries":
        return cls(b"", array.array("Q", [0]), b"", array.array("Q", [0]), b"")

    @classmethod
    def build(cls, entries: Iterable[tuple[str, SyncedFile]]) -> "PackedEntries":
        """Of (name, entry) pairs, taken one at a time (none is kept but in the bytes): in
        name order, as a state file or catalog snapshot written by this release has them,
        or in any order (then sorted once at the end). ValueError if a name comes twice."""
        names = bytearray()
        name_starts = array.array("Q", [0])
        blob = bytearray()
        starts = array.array("Q", [0])
        flags = bytearray()
        last = b""
        in_order = True
        for name, entry in entries:  # (a cold start packs 50,000: the usual case spelled out)
            key = name.encode(_ENCODING, _ERRORS)
            if in_order and key <= last and flags:
                if key == last:
                    raise ValueError(f"{name!r} given twice")
                in_order = False
            last = key
            names += key
            names += _NAME_END
            name_starts.append(len(names))
            local_fingerprint = entry.local_fingerprint
            payload = _packed_of(entry, "_packed")
            if not local_fingerprint and payload is not None:  # catalogued, packed
                blob += _CATALOGUED_PACKED_HEAD
                blob += payload
                flags.append(1)
            else:
                fingerprint = local_fingerprint.encode(_ENCODING, _ERRORS)
                if len(fingerprint) > 0xFFFF:
                    raise ValueError(f"the local fingerprint of {name!r} is too long to be one")
                kind, payload = entry_payload(name, entry)
                blob += _HEAD.pack(len(fingerprint), kind)
                blob += fingerprint
                blob += payload
                flags.append(not fingerprint)
            starts.append(len(blob))
        packed = cls(bytes(names), name_starts, bytes(blob), starts, bytes(flags))
        return packed if in_order else packed._sorted()

    def _sorted(self) -> "PackedEntries":
        """The same entries in name order. ValueError if a name comes twice."""
        order = sorted(range(len(self)), key=self._key_at)
        for before, after in zip(order, order[1:]):
            if self._key_at(before) == self._key_at(after):
                raise ValueError(f"{self.name_at(after)!r} given twice")
        names = [self._key_at(position) + _NAME_END for position in order]
        parts = [self._blob[self._starts[position]:self._starts[position + 1]] for position in order]
        return PackedEntries(b"".join(names), _ends(names), b"".join(parts), _ends(parts),
                             bytes(self._catalogued_flags[position] for position in order))

    def _key_at(self, position: int) -> bytes:
        return self._names[self._name_starts[position]:self._name_starts[position + 1] - 1]

    def __len__(self) -> int:
        return len(self._starts) - 1

    def find(self, name: str) -> int:
        """The position of ``name``; -1 if there is no such entry."""
        key = name.encode(_ENCODING, _ERRORS)
        names, starts = self._names, self._name_starts
        low, high = 0, len(starts) - 1
        while low < high:
            middle = (low + high) // 2
            here = names[starts[middle]:starts[middle + 1] - 1]  # (_key_at, inline)
            if here < key:
                low = middle + 1
            elif here > key:
                high = middle
            else:
                return middle
        return -1

    def name_at(self, position: int) -> str:
        return self._key_at(position).decode(_ENCODING, _ERRORS)

    def is_catalogued(self, position: int) -> bool:
        return bool(self._catalogued_flags[position])

    def fingerprint_at(self, position: int) -> str:
        start = self._starts[position]
        length, _ = _HEAD.unpack_from(self._blob, start)
        if not length:
            return CATALOGUED
        return self._blob[start + _HEAD.size:start + _HEAD.size + length].decode(_ENCODING, _ERRORS)

    def entry_at(self, position: int) -> SyncedFile:
        blob = self._blob
        start, end = self._starts[position], self._starts[position + 1]
        fingerprint_length, kind = _HEAD.unpack_from(blob, start)
        payload_start = start + _HEAD.size + fingerprint_length
        fingerprint = blob[start + _HEAD.size:payload_start].decode(_ENCODING, _ERRORS) if fingerprint_length \
            else CATALOGUED
        name = self.name_at(position) if kind != PAYLOAD_PACKED else None
        return entry_from_payload(kind, fingerprint, blob[payload_start:end], name)

    def get(self, name: str, default: Optional[SyncedFile] = None) -> Optional[SyncedFile]:  # type: ignore[override]
        position = self.find(name)
        return default if position < 0 else self.entry_at(position)

    def __getitem__(self, name: str) -> SyncedFile:
        position = self.find(name)
        if position < 0:
            raise KeyError(name)
        return self.entry_at(position)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.find(name) >= 0

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self) -> list[str]:
        """Every name, in order (one split of one string)."""
        if not self._split:
            return [self.name_at(position) for position in range(len(self))]
        return self._names[:-1].decode(_ENCODING, _ERRORS).split(_NAME_END_TEXT) if self._names else []

    def held_names(self) -> Iterator[str]:
        """The names of the entries not catalogued (files held here), in order."""
        return itertools.compress(self.names(), map(operator.not_, self._catalogued_flags))

    def catalogued_names(self) -> Iterator[str]:
        return itertools.compress(self.names(), self._catalogued_flags)

    def items(self) -> Iterator[tuple[str, SyncedFile]]:  # type: ignore[override]
        for position, name in enumerate(self.names()):
            yield name, self.entry_at(position)


def _ends(parts: list[bytes]) -> array.array:
    """Where each of ``parts`` starts, and the end of the last, once they are joined."""
    ends = array.array("Q", [0])
    end = 0
    for part in parts:
        end += len(part)
        ends.append(end)
    return ends


class EntriesView(Mapping[str, SyncedFile]):
    """The state as a mapping: packed entries, and the entries changed since (None: gone).
    Immutable: a reader's own copy of the changes."""

    def __init__(self, base: PackedEntries, changes: dict[str, Optional[SyncedFile]], size: int) -> None:
        self.base = base
        self.changes = changes
        self._size = size

    def __getitem__(self, name: str) -> SyncedFile:
        entry = self.get(name)
        if entry is None:
            raise KeyError(name)
        return entry

    def get(self, name: str, default: Optional[SyncedFile] = None) -> Optional[SyncedFile]:  # type: ignore[override]
        if name in self.changes:
            entry = self.changes[name]
        else:
            entry = self.base.get(name)
        return default if entry is None else entry

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        changes = self.changes
        for name in self.base.names():
            if name not in changes:
                yield name
        for name, entry in changes.items():
            if entry is not None:
                yield name

    def __len__(self) -> int:
        return self._size

    def items(self) -> Iterator[tuple[str, SyncedFile]]:  # type: ignore[override]
        changes, base = self.changes, self.base
        for position, name in enumerate(base.names()):
            if name not in changes:  # (an entry changed since is not made from the pack)
                yield name, base.entry_at(position)
        for name, changed in changes.items():
            if changed is not None:
                yield name, changed


class TrackedState:
    """A reader's copy of the state, kept current by reading only what changed. Safe for
    the threads of one worker: each question refreshes and answers under one lock.

    It is the worker's one copy: the in-memory index reads it too (``read``), so each
    entry is held once per worker, and packed (``PackedEntries``). It keeps the entries
    that changed since its last whole read (a bounded log), so the index gets only those."""

    def __init__(self, state: StateFile) -> None:
        self._state = state
        self._cursor: Optional[StateCursor] = None
        self._base = PackedEntries.empty()
        self._changes: dict[str, Optional[SyncedFile]] = {}  # since _base; None: gone
        self._size = 0
        self._catalogued = 0  # entries not held here (CATALOGUED), kept as entries change
        self._lock = threading.Lock()
        # Bumped at every whole read; the changes since it, from absolute position _log_start.
        self._generation = 0
        self._log: list[Entry] = []
        self._log_start = 0

    def _take(self, files: Mapping[str, SyncedFile]) -> None:
        self._base = files if isinstance(files, PackedEntries) else PackedEntries.build(files.items())
        self._changes = {}
        self._size = len(self._base)
        self._catalogued = self._base.catalogued
        self._generation += 1
        self._log_start += len(self._log)
        self._log = []

    def _get(self, name: str) -> Optional[SyncedFile]:
        if name in self._changes:
            return self._changes[name]
        return self._base.get(name)

    def _refresh(self) -> None:
        read = self._state.read(self._cursor, build=PackedEntries.build)
        whole = read.files is not None
        if read.files is not None:
            self._take(read.files)
        for name, entry in read.entries:
            old = self._get(name)
            self._changes[name] = entry
            self._size += (entry is not None) - (old is not None)
            self._catalogued += (entry is not None and entry.local_fingerprint == CATALOGUED) \
                - (old is not None and old.local_fingerprint == CATALOGUED)
        if not whole:  # (a whole read's are in the state every reader reads whole: a new generation)
            self._log.extend(read.entries)
        if len(self._log) > _MAX_CHANGE_LOG:  # a reader this far behind reads the whole copy
            dropped = len(self._log) // 2
            self._log_start += dropped
            self._log = self._log[dropped:]
        self._cursor = read.cursor
        if too_many_changes(len(self._changes), len(self._base), whole):
            self._fold()

    def _fold(self) -> None:
        """Pack the changes with the rest (O(files), once per a fraction of the files
        changed: O(1) per change): a long-lived worker's changes would otherwise pile up as
        objects. The state is the same, so readers go on from where they are (the log)."""
        self._base = PackedEntries.build(self._view().items())
        self._changes = {}
        assert (len(self._base), self._base.catalogued) == (self._size, self._catalogued), \
            "a fold changes nothing but the form"

    def _view(self) -> EntriesView:
        return EntriesView(self._base, dict(self._changes), self._size)

    def read(self, since: Optional[StateCursor] = None) -> StateRead:
        """What ``StateFile.read`` answers, from this copy (its cursors are its own): the
        whole state (an ``EntriesView``: the packed entries are shared), or the entries
        that changed since ``since``."""
        with self._lock:
            self._refresh()
            cursor = StateCursor((self._generation, 0, 0), self._log_start + len(self._log))
            if since is None or since.snapshot != cursor.snapshot or since.journal_offset < self._log_start:
                return StateRead(cursor, files=self._view())
            return StateRead(cursor, entries=tuple(self._log[since.journal_offset - self._log_start:]))

    def lookup(self, names: Iterable[str]) -> dict[str, SyncedFile]:
        """The current entries of ``names`` that the state has."""
        with self._lock:
            self._refresh()
            found = {}
            for name in names:
                entry = self._get(name)
                if entry is not None:
                    found[name] = entry
            return found

    def adopt(self, files: Mapping[str, SyncedFile], cursor: StateCursor) -> None:
        """Take ``files`` as the state at ``cursor`` (just written by this process): a cold
        start does not parse what it has just written."""
        with self._lock:
            self._take(files)
            self._cursor = cursor

    def forget(self) -> None:
        """Drop the copy (the next question reads the whole state again): for a process
        that asks seldom, so that it does not hold the state in between."""
        with self._lock:
            self._take(PackedEntries.empty())
            self._cursor = None

    def current(self) -> dict[str, SyncedFile]:
        """The whole state as last read (only what changed is read), as entries made for
        the caller: what a full sync plans against, without parsing the snapshot again
        (one C call that would hold the GIL, and every request thread of the worker, for
        a second at 50,000 files)."""
        with self._lock:
            self._refresh()
            return dict(self._view().items())

    def lookup_any(self) -> bool:
        """Whether the state records any file."""
        with self._lock:
            self._refresh()
            return self._size > 0

    def all_in(self, present: set[str], *, except_catalogued: bool = False) -> bool:
        """Whether every file the state records is among ``present``; with
        ``except_catalogued``, every file it records as held here (a mirror fills the
        catalogued ones in the background). O(files), in C but for the changes."""
        with self._lock:
            self._refresh()
            every = not except_catalogued or not self._catalogued
            base, changes = self._base, self._changes
            names = base.names() if every else list(base.held_names())
            # One missing is fine if it changed since (the changes below tell), else not.
            if not present.issuperset(names) and any(name not in present and name not in changes for name in names):
                return False
            return all(entry is None or name in present or (not every and entry.local_fingerprint == CATALOGUED)
                       for name, entry in changes.items())

    def catalogued_count(self) -> int:
        """How many files the state catalogues without holding them here: O(changes)."""
        with self._lock:
            self._refresh()
            return self._catalogued

    def catalogued_names(self) -> list[str]:
        """The files the state catalogues without holding them here, in name order."""
        with self._lock:
            self._refresh()
            base, changes = self._base, self._changes
            names = [name for name in base.catalogued_names() if name not in changes]
            names += [name for name, entry in changes.items() if entry is not None and entry.local_fingerprint == CATALOGUED]
            return sorted(names)
