"""Catalog snapshots: the bucket's files and their records in one object, so a new
instance (PACKAGE_FILES cache or redirect) is ready after reading one object and the
feed, not one record per file.

    .gcs_sync/snapshots/<ms>-<random>.json.gz

Format 3 (gzipped): a head line (the format, the writer's time, the feed position), then
the entries as the state file's own lines (``state.state_lines``), so a reader checks them
(``entries_from_lines``) and writes them to its state file as they are; an entry whose
record allows is a row (``state.ROW_FIELDS``), half the bytes of an object. Format 2 (the
same, every entry an object) and format 1 (one JSON document) are still read; a release
before format 3 passes a format-3 snapshot over (an older one, or a listing, instead).

Written by an instance after a complete full listing, when the newest snapshot is older
than SNAPSHOT_INTERVAL; uniquely named, never rewritten; the newest few are kept. Each
carries the feed position taken before its listing: a reader that loads it then reads
the feed from there, which covers every change made through the index since. Changes
made by other tools since the snapshot's listing are caught by the reader's first full
listing, which is due as soon as the snapshot is older than FULL_SYNC_INTERVAL.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import logging
import time
import uuid
import zlib
from typing import Callable, Iterator, Optional

from gcs_sync.drivers.base import FileStoreDriver
from gcs_sync.errors import StorageError
from gcs_sync.names import is_safe_filename
from gcs_sync.records.record import RecordError
from gcs_sync.sync.feed import FeedPosition
from gcs_sync.sync.heap import collector_paused
from gcs_sync.sync.state import (
    CATALOGUED,
    PreparedState,
    StateFile,
    SyncedFile,
    entry_json,
    iter_entries_from_lines,
    state_lines,
)
from gcs_sync.sync.tracked import PackedEntries

log = logging.getLogger("gcs_sync.snapshot")  # the name operators' log queries know

SNAPSHOTS_FOLDER = ".gcs_sync/snapshots/"
_FORMAT = 3  # 1: one JSON document; 2: a head line, then the state file's lines; 3: rows among them
_READABLE = (2, _FORMAT)  # (and 1, read apart)
SNAPSHOT_INTERVAL = 600.0  # seconds between two snapshots of one bucket
_KEEP = 3  # the newest snapshots kept; older ones are deleted
_DELETE_AFTER = 3600.0  # never delete a snapshot younger than this: a reader may be reading it
_SUFFIX = ".json.gz"


@dataclasses.dataclass(frozen=True)
class Snapshot:
    name: str
    written_at: float  # the writer's clock, seconds since the epoch
    stored_at: float  # the store's clock: when the object was written
    position: FeedPosition
    files: PackedEntries  # held so by the worker that reads it (tracked.py)
    # The same, as a state file being written from the snapshot's own lines (no entry is
    # encoded again): the reader commits it once it uses the snapshot, or discards it.
    state: PreparedState


def _time_of(name: str) -> Optional[float]:
    stem = name[len(SNAPSHOTS_FOLDER):]
    try:
        return int(stem.split("-", 1)[0]) / 1000 if stem.endswith(_SUFFIX) else None
    except ValueError:
        return None


class SnapshotStore:
    def __init__(self, driver: FileStoreDriver, wall_clock: Callable[[], float] = time.time) -> None:
        self.driver = driver
        self.wall_clock = wall_clock

    def _listed(self) -> list[tuple[str, float]]:
        """The snapshots with the store's time of each, oldest first by that time (never
        by their names: a writer's clock may be off)."""
        notes = self.driver.list_notes_after(SNAPSHOTS_FOLDER, SNAPSHOTS_FOLDER)
        return sorted(((name, written if written is not None else _time_of(name) or 0.0)
                       for name, written in notes if _time_of(name) is not None), key=lambda note: note[1])

    def newest(self, clock_skew: float, state: StateFile) -> Optional[Snapshot]:
        """The newest readable snapshot by the store's clock, written by a host whose clock
        was within ``clock_skew`` of the store's (its feed position is then trustworthy);
        an unreadable or untrustworthy one is logged and the one before it read. None if
        there is none. One listing and one read, usually. The snapshot read is written as
        ``state`` meanwhile (``Snapshot.state``: the caller commits or discards it)."""
        for name, stored_at in reversed(self._listed()):
            named = _time_of(name)
            if named is not None and abs(named - stored_at) > clock_skew:
                log.warning("catalog snapshot %s was named by a clock %.0fs off the store's (more than "
                            "FEED_CLOCK_SKEW): not used", name, abs(named - stored_at))
                continue
            try:
                data = self.driver.read_note(name)
                if data is None:
                    continue  # deleted since the listing
                with collector_paused():
                    return _decode(name, data, stored_at, state)
            except (StorageError, OSError, EOFError, zlib.error, ValueError, KeyError, TypeError, AttributeError,
                    RecordError) as exc:
                log.warning("catalog snapshot %s could not be read (%s): trying an older one", name, exc)
        return None

    def write_if_due(self, position: FeedPosition, files: dict[str, SyncedFile]) -> bool:
        """Write a snapshot of ``files`` (the state after a complete full listing) if the
        newest is older than SNAPSHOT_INTERVAL, then delete old ones; True if written. Not
        if a file has no record stored in the bucket (a record that could not be read this
        time): a new instance would not list it. Raises StorageError."""
        listed = self._listed()
        now = self.wall_clock()
        if listed and now - listed[-1][1] < SNAPSHOT_INTERVAL:
            return False
        missing = [name for name, entry in files.items() if entry.record_version is None or not entry.has_record()]
        if missing:
            log.info("no catalog snapshot this time: %d files have no record stored in the bucket (e.g. %s)",
                     len(missing), missing[0])
            return False
        name = f"{SNAPSHOTS_FOLDER}{int(now * 1000):013d}-{uuid.uuid4().hex[:12]}{_SUFFIX}"
        self.driver.put_note(name, _encode(position, files, now), create_only=True)
        log.info("catalog snapshot %s written: %d files", name, len(files))
        # The new one and the _KEEP - 1 newest before it stay; older ones go once they are
        # _DELETE_AFTER older than the newest (a reader may still be reading them).
        newest_at = listed[-1][1] if listed else None
        for old, stored_at in listed[:max(len(listed) - (_KEEP - 1), 0)]:
            if newest_at is not None and newest_at - stored_at > _DELETE_AFTER:
                self.driver.delete(old)
        return True


def _encode(position: FeedPosition, files: dict[str, SyncedFile], now: float) -> bytes:
    """The snapshot's bytes, encoded a file at a time: one ``json.dumps`` of 50,000 entries
    would hold the GIL, and every request thread of the worker, for half a second."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=5) as packed:
        head = json.dumps({"format": _FORMAT, "written_at": now, "position": position.to_json()},
                          separators=(",", ":"))
        packed.write(head.encode() + b"\n")
        # Without the local fingerprint: what a file is here is each instance's own.
        # In name order: a reader then packs them as they come (tracked.PackedEntries.build).
        catalogued = ((name, entry_json(name, entry, CATALOGUED)) for name, entry in sorted(files.items()))
        for line in state_lines(catalogued):
            packed.write(line.encode())
    return out.getvalue()


def _decode(name: str, data: bytes, stored_at: float, state: StateFile) -> Snapshot:
    raw = gzip.decompress(data)
    end = raw.find(b"\n")
    head_line = (raw if end < 0 else raw[:end]).decode("utf-8")
    head = json.loads(head_line)  # format 1: the whole document, on one line
    if not isinstance(head, dict):
        raise ValueError("not a snapshot: its first line is no JSON object")
    if head.get("format") == 1:
        return _decode_format_1(name, head, stored_at, state)
    if head.get("format") not in _READABLE:
        raise ValueError(f"format {head.get('format')!r}")
    # Lines as this release writes them, split as the state file's reader will split
    # them once they are written there (by "\n" alone, since there is no "\r").
    if end >= 0 and raw.find(b"\r", end) >= 0:
        raise ValueError("a line break other than \\n: not lines this release writes")
    # Its bytes written as the state file while they are checked (undone if they fail);
    # decoded without a copy of its bytes first: at 50,000 files each copy of the text is
    # some 35 MB more at the peak of a cold start.
    view = memoryview(raw)[end + 1:] if end >= 0 else memoryview(b"")
    prepared = state.prepare_lines(view)
    try:
        text = str(view, "utf-8")
        del view, raw  # the bytes go once written (the writing holds them until then)
        # Checked as they are read (its lines become the state as they are), and packed.
        files = PackedEntries.build(_checked(iter_entries_from_lines(_split_lines(text))))
        return Snapshot(name, float(head["written_at"]), stored_at, FeedPosition.from_json(head["position"]), files,
                        prepared)
    except BaseException:
        prepared.discard()
        raise


def _split_lines(text: str) -> Iterator[str]:
    """The lines of ``text`` one at a time (``str.split`` would hold them all at once)."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        yield text[start:end]
        start = end + 1


def _checked(entries: Iterator[tuple[str, SyncedFile]]) -> Iterator[tuple[str, SyncedFile]]:
    """``entries``, each checked: raises ValueError unless it is a catalogued file of a safe
    name (a snapshot is bucket content: the fill writes its names to the folder)."""
    for name, entry in entries:
        if entry.local_fingerprint != CATALOGUED:
            raise ValueError("an entry names a local file")
        if not is_safe_filename(name):
            raise ValueError(f"a name that is no package file name: {name!r}")
        yield name, entry


def _decode_format_1(name: str, raw: dict, stored_at: float, state: StateFile) -> Snapshot:
    if not isinstance(raw.get("files"), dict) or not all(isinstance(entry, dict) for entry in raw["files"].values()):
        raise TypeError("files: an object of entries")
    files = {filename: SyncedFile.from_json({**entry, "local_fingerprint": CATALOGUED}, filename)
             for filename, entry in raw["files"].items()}
    packed = PackedEntries.build(_checked(iter(files.items())))
    lines = "".join(state_lines((filename, entry_json(filename, entry)) for filename, entry in files.items()))
    position = FeedPosition.from_json(raw["position"])
    return Snapshot(name, float(raw["written_at"]), stored_at, position, packed, state.prepare_lines(lines.encode()))
