"""The last-synced state of one local folder: what each file's bucket version, local
fingerprint and sha256 were when local and bucket last agreed.

It is what makes deletions safe: a file missing on one side is only deleted on the other
if the state says both sides had it. A missing, unreadable or foreign state (another
bucket, another format version) is treated as empty, which never deletes anything.

It is also what the in-memory index of every worker is built from (``index.py``, through
the worker's packed copy, ``tracked.py``), so it is laid out to be read cheaply and
without the folder lock:

    state.json            snapshot, replaced atomically (temp file, then rename)
    journal-<inode>.jsonl changes appended since that snapshot, one JSON line each

The journal is named after the snapshot's inode, so a journal belongs to exactly one
snapshot: a reader that sees the snapshot replaced starts over, and a reader that sees
the same snapshot reads only the journal lines appended since its last look (O(changes)).
Writers hold the folder lock. A worker killed mid-append leaves at most one torn line,
which is skipped.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import json
import logging
import marshal
import operator
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Optional, TextIO

from gcs_sync.clock import Moment
from gcs_sync.files import replacing, temp_name, write_json_atomically
from gcs_sync.records.record import FileRecord, usual_record_fields
from gcs_sync.sync.heap import collector_paused

log = logging.getLogger("gcs_sync.state")  # the name operators' log queries know

FORMAT_VERSION = 4  # 3: entries may carry a metadata record; 4: an entry may be a row (entry_json)
_READABLE_FORMATS = (2, 3, FORMAT_VERSION)  # a format-2 state is read as entries without records
CATALOGUED = ""  # a state entry's local_fingerprint when the file is known from the bucket, not held here
# Compact the journal into a new snapshot once it outgrows this or the snapshot: every
# worker then re-reads the snapshot once, so the cost stays O(1) per change on average.
_MIN_JOURNAL_BYTES_TO_COMPACT = 256 * 1024
# A snapshot written one entry per line starts so (its header, then the files).
_LINES_HEADER_START = '{"format": '
_LINES_FILES_KEY = ', "files": {'


@dataclasses.dataclass(frozen=True, slots=True)  # slots: one per file in every worker's memory
class SyncedFile:
    remote_version: str
    local_fingerprint: str
    sha256: Optional[str] = None
    # The file's metadata record (records/record.py) and the version of its record object
    # in the bucket; a record with no version was computed here and could not be stored
    # (an instance that may not write). None: not known yet (the next sync fetches or
    # computes it).
    record: Optional[FileRecord] = None
    record_version: Optional[str] = None
    # Set instead of every field but ``local_fingerprint`` for an entry read from a state
    # line with a record of the usual shape (``entries_from_lines``, journal lines): all of
    # them in one bytes object (``_pack``), each field made again when asked for and not
    # kept. Every worker holds every entry, and uses the fields of the few files a request
    # or a change asks about: 50,000 entries take 21 MB so, 44 MB as objects. None for an
    # entry made any other way.
    _packed: Optional[bytes] = dataclasses.field(default=None, init=False, repr=False, compare=False)

    if not TYPE_CHECKING:  # (to mypy, a __getattr__ would make every attribute exist)
        def __getattr__(self, attribute: str) -> Any:
            # Only reached for a slot not set: a field of a packed entry.
            packed = object.__getattribute__(self, "_packed") if attribute in _PACKED_FIELDS else None
            if packed is None:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {attribute!r}",
                                     name=attribute, obj=self)
            remote_version, sha256, record_version, fields = _unpack(packed)
            if attribute == "record":
                return FileRecord(*fields)  # cannot fail: the fields were checked when read
            return remote_version if attribute == "remote_version" else sha256 if attribute == "sha256" \
                else record_version

    def has_record(self) -> bool:
        """Whether it has a record, without making one."""
        return object.__getattribute__(self, "_packed") is not None or self.record is not None

    def parts(self) -> tuple[str, Optional[str], Optional[FileRecord]]:
        """(remote_version, sha256, record): of a packed entry, unpacked once for the three."""
        packed = object.__getattribute__(self, "_packed")
        if packed is None:
            return self.remote_version, self.sha256, self.record
        remote_version, sha256, _, fields = _unpack(packed)
        return remote_version, sha256, FileRecord(*fields)

    def with_record(self, record: Optional[FileRecord], record_version: Optional[str]) -> "SyncedFile":
        return dataclasses.replace(self, record=record, record_version=record_version)

    def to_json(self) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "remote_version": self.remote_version, "local_fingerprint": self.local_fingerprint, "sha256": self.sha256,
        }
        if self.record is not None:
            raw["record"] = self.record.to_json()
            raw["record_version"] = self.record_version
        return raw

    @classmethod
    def from_json(cls, raw: dict[str, Any], name: Optional[str] = None) -> "SyncedFile":
        """Raises KeyError, TypeError or ValueError (RecordError) if ``raw`` is malformed.
        Entries written before records existed (format 2) simply have none."""
        raw_record = raw.get("record")
        record = None if raw_record is None else FileRecord.from_json(raw_record, "state entry")
        sha256 = raw.get("sha256")
        record_version = raw.get("record_version") if record is not None else None
        if not (type(raw["remote_version"]) is str and type(raw["local_fingerprint"]) is str
                and (sha256 is None or type(sha256) is str) and (record_version is None or type(record_version) is str)):
            raise TypeError("remote_version, local_fingerprint, sha256, record_version: strings")
        if record is not None and sha256 == record.sha256:
            sha256 = record.sha256  # one string for both (50,000 files: 6 MB less per worker)
        if record is not None and name is not None and record.filename == name:
            object.__setattr__(record, "filename", name)  # the same value: one string for the key and the record
        return cls(raw["remote_version"], raw["local_fingerprint"], sha256, record, record_version)


Entry = tuple[str, Optional[SyncedFile]]  # a journal line: name and new state (None: gone)
# What makes a whole state of (name, entry) pairs: ``dict``, or a compact form (tracked.py).
BuildEntries = Callable[[Iterator[tuple[str, SyncedFile]]], Mapping[str, SyncedFile]]

_entry_fields = operator.itemgetter("remote_version", "local_fingerprint", "sha256", "record", "record_version")
# The types of those fields in an entry that is packed (with a record of the usual shape:
# ``usual_record_fields``); any other entry is built as objects.
_DEFERRABLE_SHAPES = frozenset(
    (str, str, sha256, dict, version) for sha256 in (str, type(None)) for version in (str, type(None)))
_new_entry = object.__new__
_set_slot = object.__setattr__


def _entry_from_json(raw: dict[str, Any], name: str) -> SyncedFile:
    """``SyncedFile.from_json`` for an entry parsed from a state or journal line: the same
    entry, packed if it has the usual shape (checked here, in C). Raises as ``from_json``
    does if ``raw`` is malformed."""
    try:
        values = _entry_fields(raw)
    except KeyError:  # an entry without a record (format 2), or a malformed one
        return SyncedFile.from_json(raw, name)
    fields = usual_record_fields(values[3], name) if tuple(map(type, values)) in _DEFERRABLE_SHAPES else None
    if fields is None:
        return SyncedFile.from_json(raw, name)
    sha256 = fields[2] if values[2] == fields[2] else values[2]  # one string for both
    return _entry_with_record_fields(values[0], values[1], sha256, values[4], fields)


def _entry_with_record_fields(remote_version: str, local_fingerprint: str, sha256: Optional[str],
                              record_version: Optional[str], fields: tuple[Any, ...]) -> SyncedFile:
    """A packed entry (``SyncedFile._packed``) whose record is made from ``fields`` (checked)."""
    entry = _new_entry(SyncedFile)
    _set_slot(entry, "local_fingerprint", local_fingerprint)
    _set_slot(entry, "_packed", _pack(remote_version, sha256, record_version, fields))
    return entry


# The fields a packed entry holds in its bytes (``local_fingerprint`` stays a field: every
# index build and count reads it, and most are one shared string, CATALOGUED).
_PACKED_FIELDS = frozenset(("remote_version", "sha256", "record", "record_version"))
_SAME_AS_RECORD = True  # a packed entry's sha256 when it is its record's (the usual case)


def _pack(remote_version: str, sha256: Optional[str], record_version: Optional[str], fields: tuple[Any, ...]) -> bytes:
    """An entry's fields but its local fingerprint, and its record's (in ``FileRecord``'s
    order), as one ``marshal`` bytes object (in memory only: never written), each sha256 as
    its 32 bytes. About 190 bytes for a usual entry, where its objects take 470."""
    filename, size, record_sha256, upload_time, uploader, requires_python, metadata_sha256, *rest = fields
    return _dumps((remote_version, _SAME_AS_RECORD if sha256 == record_sha256 else _squeezed(sha256), record_version,
                   filename, size, _squeezed(record_sha256), upload_time, uploader, requires_python,
                   _squeezed(metadata_sha256), *rest))


def _unpack(packed: bytes) -> tuple[str, Optional[str], Optional[str], tuple[Any, ...]]:
    """(remote_version, sha256, record_version, the record's fields) of ``_pack``."""
    remote_version, sha256, record_version, filename, size, record_sha256, upload_time, uploader, requires_python, \
        metadata_sha256, *rest = _loads(packed)
    record_sha256 = _unsqueezed(record_sha256)
    fields = (filename, size, record_sha256, upload_time, uploader, requires_python, _unsqueezed(metadata_sha256),
              *rest)
    return remote_version, record_sha256 if sha256 is _SAME_AS_RECORD else _unsqueezed(sha256), record_version, fields


def _squeezed(digest: Optional[str]) -> Optional[str | bytes]:
    """A sha256 written as 64 lowercase hex digits, as its 32 bytes; anything else as it is
    (``_unsqueezed`` gives back exactly the string it was)."""
    try:
        raw = _fromhex(digest)  # type: ignore[arg-type]
    except (ValueError, TypeError):  # (None, or not hex)
        return digest
    # fromhex also takes capitals, and spaces between the bytes: only what it gives back.
    return raw if len(raw) == 32 and raw.hex() == digest else digest


def _unsqueezed(value: Optional[str | bytes]) -> Optional[str]:
    return value.hex() if type(value) is bytes else value  # type: ignore[return-value]


_dumps = marshal.dumps
_fromhex = bytes.fromhex
_loads = marshal.loads


@dataclasses.dataclass(frozen=True)
class StateCursor:
    """Where a reader stopped: which snapshot, and how far into its journal."""

    snapshot: tuple[int, int, int]  # inode, mtime_ns, size: inode numbers alone get reused
    journal_offset: int


@dataclasses.dataclass(frozen=True)
class StateRead:
    """What changed since a cursor: a whole state (``files``) if the snapshot is new,
    else only the journal entries appended since (``entries``)."""

    cursor: StateCursor
    files: Optional[Mapping[str, SyncedFile]] = None
    entries: tuple[Entry, ...] = ()


_NO_SNAPSHOT = (0, 0, 0)

class FailureKind(enum.StrEnum):
    """What can fail while the folder follows the bucket, each recorded until it next
    succeeds (its value names its record): reaching the bucket, and the htpasswd object
    (PASSWORD_FILE in the bucket: auth/password_file.py)."""

    SYNC = "sync"
    PASSWORDS = "passwords"


FAILURE_KINDS = tuple(FailureKind)  # readiness reports the first one recorded


@dataclasses.dataclass(frozen=True)
class Listing:
    """The last full listing of the bucket: when it began (``began``; ``listed_at`` is the
    wall-clock time, for people to read) and whether every change it found was applied.
    ``marker`` is always None since the change feed replaced the change marker (kept so
    records written before still read)."""

    marker: Optional[str]
    listed_at: float
    complete: bool
    began: Optional[Moment] = None

    def age(self) -> Optional[float]:
        """Seconds since it began; None if that cannot be told (another boot, an older record)."""
        return None if self.began is None else self.began.age()


class StateFile:
    def __init__(self, control_folder: Path, store_url: str) -> None:
        self.control = control_folder
        self.path = control_folder / "state.json"
        # Touched after every check that found the folder current with the bucket: its age
        # is how stale this instance's view may be.
        # (A moment of the monotonic clock: ``clock.Moment``.)
        self._checked_stamp = control_folder / "checked.json"
        # The time of the last full listing, and whether it was complete.
        self._listing_record = control_folder / "listing.json"
        # The last failure to reach the bucket, until a check succeeds: what readiness reports.
        self._failure_record = control_folder / "failure.json"
        # Files of the bucket that the last listing could not fetch into the folder.
        self._unservable_record = control_folder / "unservable.json"
        self._store_url = store_url
        # Set when the snapshot on disk can't be used: the next sync writes a new one.
        self.needs_snapshot = False

    # -- reading (no lock needed) ----------------------------------------------------

    def load(self) -> dict[str, SyncedFile]:
        files = self.read().files
        assert isinstance(files, dict)  # (a whole read of the file: a dict)
        return files

    def read(self, since: Optional[StateCursor] = None, build: Optional[BuildEntries] = None) -> StateRead:
        """The state, or only what changed since ``since`` if the snapshot is the same.

        With ``build``, a whole read is the snapshot's entries as ``build`` makes them of
        (name, entry) pairs, in the file's order (``tracked.PackedEntries.build``), and the
        journal's entries since it as ``entries``, to apply in order."""
        for _ in range(3):  # a compaction between our reads: start over
            snapshot = self._snapshot_id()
            if since is not None and since.snapshot != snapshot:
                followed = self._follow_compaction(since, snapshot)
                if followed is not None:
                    return followed
            if since is not None and since.snapshot == snapshot:
                entries, offset = self._journal_entries(snapshot, since.journal_offset)
                if self._snapshot_id() != snapshot:  # compacted meanwhile: that journal may be another's
                    since = None
                    continue
                return StateRead(StateCursor(snapshot, offset), entries=tuple(entries))
            with collector_paused():
                loaded = self._load_snapshot(build or dict)
            entries, offset = self._journal_entries(snapshot, 0)
            if self._snapshot_id() != snapshot:
                continue
            self.needs_snapshot = loaded is None or snapshot == _NO_SNAPSHOT
            if build is not None:
                base = loaded if loaded is not None else build(iter(()))
                return StateRead(StateCursor(snapshot, offset), files=base,
                                 entries=() if self.needs_snapshot else tuple(entries))
            files = dict(loaded or {})
            if not self.needs_snapshot:  # a foreign snapshot's journal is foreign too
                for name, entry in entries:
                    if entry is None:
                        files.pop(name, None)
                    else:
                        files[name] = entry
            return StateRead(StateCursor(snapshot, offset), files=files)
        raise OSError(f"state in {self.control} kept changing while being read")

    def _follow_compaction(self, since: StateCursor, snapshot: tuple[int, int, int]) -> Optional[StateRead]:
        """What changed since ``since`` when the snapshot was replaced by a compaction of
        the very snapshot ``since`` stands on: the rest of its journal, then the new
        journal, O(changes) instead of a whole read (the compaction's lineage file says
        what it compacted). None if that cannot be told: then the whole state is read."""
        try:
            raw = json.loads(self._lineage_path(snapshot).read_text(encoding="utf-8"))
            if tuple(raw["snapshot"]) != snapshot or tuple(raw["from"]) != since.snapshot:
                return None
            compacted_to = int(raw["journal_offset"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("compaction record of %s unreadable (%s): reading the whole state", self.control, exc)
            return None
        rest, offset = self._journal_entries(since.snapshot, since.journal_offset)
        if offset != compacted_to:
            return None  # the old journal is gone or not what was compacted: read it all
        entries, new_offset = self._journal_entries(snapshot, 0)
        if self._snapshot_id() != snapshot:
            return None
        return StateRead(StateCursor(snapshot, new_offset), entries=tuple(rest + entries))

    def _lineage_path(self, snapshot: tuple[int, int, int]) -> Path:
        return self.control / f"lineage-{snapshot[0]}.json"

    def _snapshot_id(self) -> tuple[int, int, int]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return _NO_SNAPSHOT
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def _journal_path(self, snapshot: tuple[int, int, int]) -> Path:
        return self.control / f"journal-{snapshot[0]}.jsonl"

    def _load_snapshot(self, build: BuildEntries) -> Optional[Mapping[str, SyncedFile]]:
        """The snapshot's files (``build`` of its entries); None if it is foreign or damaged
        (then so is its journal).
        A snapshot written a file per line (``_write_state_json``) is read a line at a
        time: parsing 50,000 entries in one ``json.loads`` would build them all as dicts
        first (a transient of several times the state, left as fragmented memory)."""
        try:
            with open(self.path, encoding="utf-8") as source:
                first = source.readline()
                if first.startswith(_LINES_HEADER_START) and first.endswith(_LINES_FILES_KEY + "\n"):
                    header = json.loads(first[: first.rindex(_LINES_FILES_KEY)] + "}")
                    if not self._is_ours(header):
                        return None
                    return build(iter_entries_from_lines(source))
                raw = json.loads(first + source.read())
        except FileNotFoundError:
            return build(iter(()))
        except (OSError, ValueError) as exc:
            log.error("state file %s is unreadable (%s); starting from an empty state", self.path, exc)
            return None
        except (KeyError, TypeError, AttributeError) as exc:
            log.error("state file %s is malformed (%s); starting from an empty state", self.path, exc)
            return None
        if not isinstance(raw, dict) or not self._is_ours(raw):
            return None
        try:
            return build((name, SyncedFile.from_json(entry, name)) for name, entry in raw["files"].items())
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            log.error("state file %s is malformed (%s); starting from an empty state", self.path, exc)
            return None

    def _is_ours(self, raw: dict[str, Any]) -> bool:
        if raw.get("format") not in _READABLE_FORMATS or raw.get("store") != self._store_url:
            log.warning(
                "state file %s belongs to %s (format %s), not %s; starting from an empty state",
                self.path, raw.get("store"), raw.get("format"), self._store_url,
            )
            return False
        return True

    def _journal_entries(self, snapshot: tuple[int, int, int], offset: int) -> tuple[list[Entry], int]:
        """Whole lines appended since ``offset``, and the offset after them. A line still
        being written (no newline yet) is left for the next read."""
        if snapshot == _NO_SNAPSHOT:
            return [], 0
        try:
            with open(self._journal_path(snapshot), "rb") as journal:
                journal.seek(offset)
                data = journal.read()
        except FileNotFoundError:
            return [], offset
        end = data.rfind(b"\n") + 1
        entries = []
        for line in data[:end].split(b"\n"):
            if not line:
                continue
            try:
                record = json.loads(line)
                entry = record["entry"]
                name = record["name"]
                entries.append((name, None if entry is None else _entry_from_json(entry, name)))
            except (ValueError, KeyError, TypeError) as exc:
                # Left by a worker killed mid-append; the next append ended the torn line.
                log.warning("ignoring a torn line in the state journal of %s: %s", self.control, exc)
        return entries, offset + end

    # -- writing (callers hold the folder lock) --------------------------------------

    def record(self, name: str, entry: Optional[SyncedFile]) -> None:
        """Append one file's new state (None: forgotten)."""
        self.record_many([(name, entry)])

    def record_many(self, entries: Iterable[Entry]) -> None:
        """Append files' new states in one write (a cold start records thousands)."""
        lines = [json.dumps({"name": name, "entry": None if entry is None else entry.to_json()})
                 for name, entry in entries]
        if not lines:
            return
        snapshot = self._snapshot_id()
        if snapshot == _NO_SNAPSHOT:
            self.save({})  # a journal needs its snapshot
            snapshot = self._snapshot_id()
        with open(self._journal_path(snapshot), "a", encoding="utf-8") as journal:
            # The leading newline ends a line torn by a worker killed mid-append, so only
            # that line is lost, not these too; blank lines are skipped on reading.
            journal.write("\n" + "\n".join(lines) + "\n")

    def should_compact(self) -> bool:
        snapshot = self._snapshot_id()
        if self.needs_snapshot or snapshot == _NO_SNAPSHOT:
            return True
        try:
            journal_size = self._journal_path(snapshot).stat().st_size
        except FileNotFoundError:
            return False
        return journal_size > max(_MIN_JOURNAL_BYTES_TO_COMPACT, snapshot[2])

    def save(self, files: dict[str, SyncedFile]) -> None:
        """Write the whole state as a new snapshot with an empty journal (readers then
        read it whole)."""
        self._write_snapshot(files, compacted=False)

    def prepare_lines(self, lines: bytes | memoryview) -> "PreparedState":
        """``save`` from entries already written as this file's lines (``state_lines``, UTF-8:
        a catalog snapshot's, checked with ``entries_from_lines``), no entry encoded again:
        the state is written beside this file in a thread of its own, while the caller checks
        those lines (a cold start parses a catalog snapshot's meanwhile: some 16 MB at 50,000
        files, written without the GIL), and put in place only by ``commit``."""
        return PreparedState(self, lines)

    def _put_in_place(self, temp: Path) -> None:
        """Make the whole state file ``temp`` (written beside this one) the state."""
        stat = temp.stat()
        new = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        # As in _write_snapshot: a journal left under the inode it reuses is not its own.
        self._journal_path(new).unlink(missing_ok=True)
        self._lineage_path(new).unlink(missing_ok=True)
        os.replace(temp, self.path)
        self.needs_snapshot = False
        keep = {self._journal_path(new).name}
        for old in [*self.control.glob("journal-*.jsonl"), *self.control.glob("lineage-*.json")]:
            if old.name not in keep:
                old.unlink(missing_ok=True)

    def snapshot_cursor(self) -> StateCursor:
        """Where a reader of the snapshot just written stands (nothing appended since)."""
        return StateCursor(self._snapshot_id(), 0)

    def compact(self, files: dict[str, SyncedFile]) -> None:
        """Write ``files``, which must be exactly the current snapshot plus its journal,
        as a new snapshot, and say so in a lineage file: a reader that has read the old
        journal goes on from the new one without reading the snapshot (O(changes))."""
        self._write_snapshot(files, compacted=True)

    def _write_snapshot(self, files: dict[str, SyncedFile], *, compacted: bool) -> None:
        before = self._snapshot_id()
        old_journal = self._journal_path(before)
        try:
            journal_size = old_journal.stat().st_size if before != _NO_SNAPSHOT else 0
        except FileNotFoundError:
            journal_size = 0
        with replacing(self.path) as temp:
            with open(temp, "w", encoding="utf-8") as out:
                _write_state_json(out, self._store_url, files)
            stat = temp.stat()
            new = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            # A journal (or lineage) left by a crash under the inode the new snapshot happens
            # to reuse would otherwise be read as the new snapshot's.
            self._journal_path(new).unlink(missing_ok=True)
            self._lineage_path(new).unlink(missing_ok=True)
            if compacted and before != _NO_SNAPSHOT and not self.needs_snapshot:
                write_json_atomically(self._lineage_path(new), {
                    "snapshot": list(new), "from": list(before), "journal_offset": journal_size,
                })
        self.needs_snapshot = False
        # The journal just compacted stays until the next compaction: readers finish it.
        keep = {self._journal_path(new).name, self._lineage_path(new).name}
        if compacted:
            keep.add(old_journal.name)
        for old in [*self.control.glob("journal-*.jsonl"), *self.control.glob("lineage-*.json")]:
            if old.name not in keep:
                old.unlink(missing_ok=True)

    # -- freshness -------------------------------------------------------------------

    def mark_pulled(self, as_of: Moment) -> None:
        """Record that the folder was found current with the bucket, as of the moment the
        check began: a change made after that moment must not look older than it is. A
        moment of the monotonic clock, not a file time, so a clock step changes nothing.
        Best effort: a full disk must not turn reads into errors (each worker then keeps
        its own moment, ``StorageClient``)."""
        try:
            # And when it ended: how long no check has run (``check_idle_age``).
            write_json_atomically(self._checked_stamp, {**as_of.to_json(), "ended": Moment.now().monotonic})
        except OSError as exc:
            log.warning("could not record the freshness check in %s: %s", self._checked_stamp, exc)

    def check_idle_age(self) -> Optional[float]:
        """Seconds since the last check that found the folder current ended; None if no
        check of this boot did (or the record is unreadable)."""
        try:
            raw = json.loads(self._checked_stamp.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # missing, or torn by a crash: the next check rewrites it
            return None
        ended = Moment.from_json({**raw, "monotonic": raw.get("ended")}) if isinstance(raw, dict) else None
        return None if ended is None else ended.age()

    def pulled_age(self) -> Optional[float]:
        """Seconds since any worker on this folder last found it current; None if no
        worker of this boot has (or the record is unreadable)."""
        try:
            raw = json.loads(self._checked_stamp.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # torn by a crash: the next check rewrites it
            log.debug("ignoring %s (%s): the next read checks the bucket", self._checked_stamp, exc)
            return None
        moment = Moment.from_json(raw)
        return None if moment is None else moment.age()

    def last_listing(self) -> Optional[Listing]:
        try:
            raw = json.loads(self._listing_record.read_text(encoding="utf-8"))
            return Listing(
                raw["marker"], float(raw["listed_at"]), bool(raw["complete"]), Moment.from_json(raw.get("began")),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring %s (%s): the next check lists the bucket", self._listing_record, exc)
            return None

    def record_failure(self, message: str, kind: str = FailureKind.SYNC, reason: Optional[str] = None) -> bool:
        """Record the last failure of one kind (``FAILURE_KINDS``) until ``clear_failure(kind)``:
        ``message`` with the details (names, paths), ``reason`` a short category that says
        none of them (what anonymous readiness shows). Best effort: recording a failure must
        not fail in turn (a full disk), so that reads go on: False if it could not be written."""
        payload: dict[str, object] = {
            "error": message, "at": time.time(), "reason": reason or "error", "moment": Moment.now().to_json(),
        }
        try:
            write_json_atomically(self._failure_path(kind), payload)
            return True
        except OSError as exc:
            log.warning("could not record the %s failure in %s: %s", kind, self.control, exc)
            return False

    def failure_age(self, kind: str = FailureKind.SYNC) -> Optional[float]:
        """Seconds since the recorded failure of ``kind`` (None if none, or not of this boot)."""
        failure = self.failure(kind)
        moment = None if failure is None else Moment.from_json(failure.get("moment"))
        return None if moment is None else moment.age()

    def clear_failure(self, kind: str = FailureKind.SYNC) -> None:
        try:
            self._failure_path(kind).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not clear the %s failure record in %s: %s", kind, self.control, exc)

    def record_unservable(self, files: dict[str, dict[str, str]]) -> bool:
        """The bucket's files this folder could not fetch at the last listing (name ->
        ``{"error", "reason"}``): readiness reports them until a listing fetches them."""
        try:
            if files:
                write_json_atomically(self._unservable_record, {"files": files, "at": time.time()})
            else:
                self._unservable_record.unlink(missing_ok=True)
            return True
        except OSError as exc:
            log.warning("could not record the files that failed to download in %s: %s", self.control, exc)
            return False

    def unservable(self) -> dict[str, dict[str, str]]:
        try:
            raw = json.loads(self._unservable_record.read_text(encoding="utf-8"))
            files = raw["files"]
            return files if isinstance(files, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return {"?": {"error": f"unreadable {self._unservable_record.name}: {exc}", "reason": "unreadable state"}}

    def failure(self, kind: str) -> Optional[dict[str, object]]:
        path = self._failure_path(kind)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            return {"error": f"unreadable {path.name}: {exc}", "at": None}

    def last_failure(self) -> Optional[dict[str, object]]:
        """What readiness reports: the sync's failure first, else another kind's."""
        return next((found for found in map(self.failure, FAILURE_KINDS) if found is not None), None)

    def _failure_path(self, kind: str) -> Path:
        return self._failure_record if kind == FailureKind.SYNC else self.control / f"failure-{kind}.json"

    def record_listing(self, marker: Optional[str], began: Moment, *, complete: bool) -> bool:
        """Best effort, like every record read only to decide when to look again: False on
        a full disk, where the caller keeps its own copy (``ViewRecord.last_listing``)."""
        try:
            write_json_atomically(self._listing_record, {
                "marker": marker, "listed_at": time.time() - (began.age() or 0.0), "complete": complete,
                "began": began.to_json(),
            })
            return True
        except OSError as exc:
            log.warning("could not record the listing in %s: %s", self._listing_record, exc)
            return False


class PreparedState:
    """A whole state file being written from entry lines (``StateFile.prepare_lines``),
    beside the state, in a thread of its own; ``commit`` waits for it and puts it in
    place, ``discard`` waits for it and removes it. One or the other, once, from the
    thread that prepared it; ``discard`` after ``commit`` does nothing."""

    def __init__(self, state: StateFile, lines: bytes | memoryview) -> None:
        self._state = state
        self._temp: Optional[Path] = state.path.with_name(temp_name(state.path.name))
        self._error: Optional[BaseException] = None
        head = _lines_header(state._store_url).encode("utf-8")
        self._thread = threading.Thread(target=self._write, args=(head, lines), name="gcs_sync-state-write",
                                        daemon=True)
        self._thread.start()

    def _write(self, head: bytes, lines: bytes | memoryview) -> None:
        assert self._temp is not None
        try:
            with open(self._temp, "wb") as out:
                out.write(head)
                out.write(lines)
                # A last line without its line break (a snapshot's text may end so) gets one.
                out.write(b"}}\n" if not lines or bytes(lines[-1:]) == b"\n" else b"\n}}\n")
        except BaseException as exc:  # any, not only OSError: raised by commit, in the caller's thread
            self._error = exc

    def commit(self) -> None:
        """Raises what the writing raised (an OSError: the file could not be written;
        whatever ``pieces`` raised) if it failed: nothing changes then."""
        self._thread.join()
        temp, self._temp = self._temp, None
        if temp is None:
            return
        try:
            if self._error is not None:
                raise self._error
            self._state._put_in_place(temp)
        finally:
            temp.unlink(missing_ok=True)

    def discard(self) -> None:
        self._thread.join()
        temp, self._temp = self._temp, None
        if temp is not None:
            temp.unlink(missing_ok=True)


def _write_state_json(out: TextIO, store_url: str, files: dict[str, SyncedFile]) -> None:
    """The snapshot's JSON, written one entry per line (read back a line at a time:
    ``entries_from_lines``): a single ``json.dumps`` of 50,000 entries holds the GIL (every
    request thread of the worker) for half a second."""
    _write_state_lines(out, store_url, ((name, entry_json(name, files[name])) for name in sorted(files)))


def _lines_header(store_url: str) -> str:
    return json.dumps({"format": FORMAT_VERSION, "store": store_url, "lines": 1})[:-1] + _LINES_FILES_KEY + "\n"


def _write_state_lines(out: TextIO, store_url: str, entries: Iterable[tuple[str, Any]]) -> None:
    out.write(_lines_header(store_url))
    out.writelines(state_lines(entries))
    out.write("}}\n")


# An entry as a JSON array (a row), in this order, when its record is of the usual kind
# (its file name is the entry's name, its sha256 the entry's): half the bytes of the same
# entry as an object, read in a third of the time (a cold start reads 50,000).
ROW_FIELDS = ("remote_version", "local_fingerprint", "sha256", "record_version", "size", "upload_time", "uploader",
              "requires_python", "metadata_sha256", "metadata_problem", "yanked", "yank_reason")
_NONE = type(None)
_ROW_SHAPES = frozenset(itertools.product(
    (str,), (str,), (str,), (str, _NONE), (int,), (str,), (str, _NONE), (str, _NONE), (str, _NONE), (str, _NONE),
    (bool,), (str, _NONE)))


def entry_json(name: str, entry: SyncedFile, local_fingerprint: Optional[str] = None) -> Any:
    """The JSON value of ``name``'s entry in a state line (``state_lines``): a row (see
    ROW_FIELDS) if its record allows, else the object of ``SyncedFile.to_json``; with
    ``local_fingerprint`` in place of its own if given (a catalog snapshot's entries). A
    packed entry is written from its bytes, without making its record."""
    fingerprint = entry.local_fingerprint if local_fingerprint is None else local_fingerprint
    packed = object.__getattribute__(entry, "_packed")
    if packed is None:
        remote_version, sha256, record_version, record = entry.remote_version, entry.sha256, entry.record_version, \
            entry.record
        if record is None:
            return {**entry.to_json(), "local_fingerprint": fingerprint}
        fields = record.fields()
    else:
        remote_version, sha256, record_version, fields = _unpack(packed)
    if fields[0] != name or fields[2] != sha256:
        return {**entry.to_json(), "local_fingerprint": fingerprint}
    _, size, _, upload_time, uploader, requires_python, metadata_sha256, metadata_problem, yanked, yank_reason = fields
    return [remote_version, fingerprint, sha256, record_version, size, upload_time, uploader,
            requires_python, metadata_sha256, metadata_problem, yanked, yank_reason]


def _entry_from_row(row: list[Any], name: str) -> SyncedFile:
    """The packed entry of a row (see ROW_FIELDS); TypeError if the row is not of that shape."""
    if len(row) != len(ROW_FIELDS) or tuple(map(type, row)) not in _ROW_SHAPES:
        raise TypeError(f"the entry of {name!r} is a row of another shape than {', '.join(ROW_FIELDS)}")
    # _pack's tuple, spelled out (its sha256 is the record's): a cold start packs every
    # entry, and going through _entry_with_record_fields took 25% longer (152 against
    # 123 ms at 50,000 rows). tests/test_state.py reads rows back as the entries saved.
    remote_version, fingerprint, sha256, record_version, size, upload_time, uploader, requires_python, \
        metadata_sha256, metadata_problem, yanked, yank_reason = row
    entry = _new_entry(SyncedFile)
    _set_slot(entry, "local_fingerprint", fingerprint)
    _set_slot(entry, "_packed", _dumps((
        remote_version, _SAME_AS_RECORD, record_version, name, size, _squeezed(sha256), upload_time, uploader,
        requires_python, _squeezed(metadata_sha256) if metadata_sha256 else metadata_sha256, metadata_problem,
        yanked, yank_reason)))
    return entry


def state_lines(entries: Iterable[tuple[str, Any]]) -> Iterator[str]:
    """The lines of the state file's entries (its header and end aside), one per entry (a
    JSON value of ``entry_json``): what a catalog snapshot carries, so a reader writes them
    as they are."""
    for index, (name, entry) in enumerate(entries):
        yield ("," if index else "") + json.dumps(name) + ": " + json.dumps(entry) + "\n"


def entries_from_lines(source: Iterable[str]) -> dict[str, SyncedFile]:
    """The entries of lines written by ``state_lines`` (a state file after its header, a
    catalog snapshot after its own), one line each. Raises ValueError, KeyError or
    TypeError if a line is not one, or a name is given twice."""
    files: dict[str, SyncedFile] = {}
    for name, entry in iter_entries_from_lines(source):
        if name in files:
            raise ValueError(f"{name!r} given twice")
        files[name] = entry
    return files


def iter_entries_from_lines(source: Iterable[str]) -> Iterator[tuple[str, SyncedFile]]:
    """``entries_from_lines`` one (name, entry) at a time, in the lines' order, held by
    nobody (a worker packs them: tracked.py), and without its check that a name comes once
    (the caller's)."""
    chunk: list[str] = []
    seen = False
    for line in source:
        line = line.strip()
        if not line or line == "}}":
            continue
        # Each after the first starts with its comma: lines copied as they are (a
        # catalog snapshot's) then still make one JSON document of the state file.
        if line.startswith(",") != seen:
            raise ValueError(f"an entry line {'does not start' if seen else 'starts'} with a comma")
        seen = True
        chunk.append(line)
        if len(chunk) == _PARSE_CHUNK:
            yield from _parse_entries(chunk)
            chunk = []
    yield from _parse_entries(chunk)


# Entry lines parsed per json.loads: one call per line cost as much as the parse itself,
# one call for all would build every entry's dicts at once (a transient of several
# times the state, left as fragmented memory).
_PARSE_CHUNK = 100


def _parse_entries(lines: list[str]) -> Iterator[tuple[str, SyncedFile]]:
    if not lines:
        return
    parsed = json.loads("{" + "".join(lines).removeprefix(",") + "}")
    if len(parsed) != len(lines):  # as read a line at a time: one entry per line, each name once
        raise ValueError("a line that is not exactly one entry, or a name given twice")
    for name, entry in parsed.items():
        if type(entry) is list:
            yield name, _entry_from_row(entry, name)
        elif isinstance(entry, dict):
            yield name, _entry_from_json(entry, name)
        else:
            raise TypeError(f"the entry of {name!r} is neither a JSON object nor a row")


# The kinds of an entry's payload in ``entry_payload``.
PAYLOAD_PACKED = 0  # a packed entry's bytes (``_pack``)
PAYLOAD_OBJECT = 1  # any other entry: its JSON object (``SyncedFile.to_json``), marshalled


def entry_payload(name: str, entry: SyncedFile) -> tuple[int, bytes]:
    """(kind, bytes) of everything ``name``'s entry holds but its local fingerprint:
    what ``entry_from_payload`` makes it from again (tracked.py packs many)."""
    packed = object.__getattribute__(entry, "_packed")
    if packed is not None:
        return PAYLOAD_PACKED, packed
    record = entry.record
    if record is None:
        return PAYLOAD_OBJECT, _dumps(entry.to_json())
    return PAYLOAD_PACKED, _pack(entry.remote_version, entry.sha256, entry.record_version, record.fields())


def entry_from_payload(kind: int, local_fingerprint: str, payload: bytes, name: Optional[str]) -> SyncedFile:
    """The entry of ``entry_payload``'s (kind, bytes) and its local fingerprint; ``name``
    is needed for PAYLOAD_OBJECT only."""
    if kind == PAYLOAD_PACKED:
        entry = _new_entry(SyncedFile)
        _set_slot(entry, "local_fingerprint", local_fingerprint)
        _set_slot(entry, "_packed", payload)
        return entry
    return SyncedFile.from_json({**_loads(payload), "local_fingerprint": local_fingerprint}, name)
