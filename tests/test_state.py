"""The synced state as its readers see it: every worker's index reads it without the
folder lock, so a reader must get either what changed since it last looked or, after a
compaction, the whole state, never a mix."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import pytest

from gcs_sync.sync.state import StateFile, SyncedFile

STORE = "gs://bucket/packages/"


@pytest.fixture
def state(tmp_path: Path) -> StateFile:
    return StateFile(tmp_path, STORE)


def entry(n: int) -> SyncedFile:
    return SyncedFile(remote_version=str(n), local_fingerprint=f"f{n}", sha256=f"{n:064x}")


def test_a_reader_gets_only_the_lines_appended_since_it_last_looked(state: StateFile, tmp_path: Path) -> None:
    state.save({"a": entry(1)})
    reader = StateFile(tmp_path, STORE)  # another worker
    first = reader.read()
    assert first.files == {"a": entry(1)}
    state.record("b", entry(2))
    state.record("a", None)
    second = reader.read(first.cursor)
    assert second.files is None and second.entries == (("b", entry(2)), ("a", None))
    third = reader.read(second.cursor)
    assert third.files is None and third.entries == ()
    assert reader.load() == {"b": entry(2)}


def test_after_a_compaction_a_reader_gets_the_whole_state(state: StateFile, tmp_path: Path) -> None:
    state.save({"a": entry(1)})
    reader = StateFile(tmp_path, STORE)
    cursor = reader.read().cursor
    state.record("b", entry(2))
    state.save(state.load())  # compaction: new snapshot, the old journal is gone
    state.record("c", entry(3))
    read = reader.read(cursor)
    assert read.files == {"a": entry(1), "b": entry(2), "c": entry(3)}
    assert sorted(p.name for p in tmp_path.glob("journal-*")) == [f"journal-{(tmp_path / 'state.json').stat().st_ino}.jsonl"]


def test_a_line_being_written_is_left_for_the_next_read(state: StateFile, tmp_path: Path) -> None:
    state.save({})
    state.record("a", entry(1))
    journal = next(tmp_path.glob("journal-*"))
    cursor = state.read().cursor
    with open(journal, "a") as out:
        out.write('\n{"name": "b", "entry": {"remote_version": "2", ')  # a writer mid-append
    read = state.read(cursor)
    assert read.entries == ()
    with open(journal, "a") as out:
        out.write('"local_fingerprint": "f2", "sha256": null}}\n')
    assert state.read(read.cursor).entries == (("b", SyncedFile("2", "f2", None)),)


def test_a_line_torn_by_a_killed_writer_is_skipped(state: StateFile, tmp_path: Path) -> None:
    state.record("a", entry(1))
    journal = next(tmp_path.glob("journal-*"))
    with open(journal, "a") as out:
        out.write('{"name": "b", "ent')  # the writer died here
    state.record("c", entry(3))
    assert state.load() == {"a": entry(1), "c": entry(3)}


def test_a_snapshot_of_another_store_is_empty_and_its_journal_ignored(state: StateFile, tmp_path: Path) -> None:
    StateFile(tmp_path, "s3://elsewhere/").record("a", entry(1))
    assert state.load() == {} and state.needs_snapshot
    assert state.should_compact()


def test_after_a_compaction_a_reader_goes_on_from_where_it_stood_without_the_whole_state(
    state: StateFile, tmp_path: Path
) -> None:
    """A compaction writes what the snapshot and its journal say: a reader that was part way
    through the old journal gets its rest and the new journal's lines, not the snapshot
    (at 50,000 files that would be a whole read in some request)."""
    state.save({"a": entry(1)})
    reader = StateFile(tmp_path, STORE)
    first = reader.read()
    state.record("b", entry(2))
    second = reader.read(first.cursor)
    state.record("c", entry(3))  # not seen by the reader before the compaction
    state.compact({"a": entry(1), "b": entry(2), "c": entry(3)})
    state.record("a", None)
    third = reader.read(second.cursor)
    assert third.files is None and third.entries == (("c", entry(3)), ("a", None))
    assert reader.read(third.cursor).entries == ()
    assert reader.load() == {"b": entry(2), "c": entry(3)}


def test_a_reader_of_an_older_snapshot_than_the_compacted_one_reads_the_whole_state(
    state: StateFile, tmp_path: Path
) -> None:
    state.save({"a": entry(1)})
    reader = StateFile(tmp_path, STORE)
    first = reader.read()
    state.compact({"a": entry(1)})
    state.compact({"a": entry(1)})  # two compactions: the reader's snapshot is not the one compacted
    state.record("b", entry(2))
    assert reader.read(first.cursor).files == {"a": entry(1), "b": entry(2)}


def test_a_tracked_state_counts_its_catalogued_entries_as_they_change(state: StateFile) -> None:
    """What a mirror's fill asks at every check (is anything left to bring?), kept as
    lines arrive and after a whole read, never by a pass over every entry per check."""
    from gcs_sync.sync.state import CATALOGUED
    from gcs_sync.sync.tracked import TrackedState

    state.save({"a-1.0.tar.gz": SyncedFile("v1", CATALOGUED), "b-1.0.tar.gz": SyncedFile("v1", "f1")})
    tracked = TrackedState(state)
    assert tracked.catalogued_count() == 1
    state.record("c-1.0.tar.gz", SyncedFile("v1", CATALOGUED))
    state.record("a-1.0.tar.gz", SyncedFile("v1", "f2"))  # brought here by the fill
    assert tracked.catalogued_count() == 1
    state.record("c-1.0.tar.gz", None)  # removed
    state.record("b-1.0.tar.gz", SyncedFile("v2", CATALOGUED))  # catalogued again
    assert tracked.catalogued_count() == 1 and tracked.catalogued_names() == ["b-1.0.tar.gz"]
    state.compact(state.load())
    assert tracked.catalogued_count() == 1


def record_of(name: str, n: int, **fields: object) -> dict:
    raw = {"format": 1, "filename": name, "size": n, "sha256": f"{n:064x}", "upload_time": "2026-12-05T09:00:00.000000Z",
           "uploader": "alice", "requires_python": ">=3.8", "metadata_sha256": None, "metadata_problem": None,
           "yanked": False, "yank_reason": None}
    raw.update(fields)
    return raw


def test_a_state_of_many_entries_is_read_back_as_written(state: StateFile) -> None:
    """Entries are parsed many lines per call (2,500 here: several calls, and a last one
    that is not full); every entry, record and field comes back as it was saved."""
    from gcs_sync.records.record import FileRecord

    files = {}
    for n in range(2_500):
        name = f"p{n % 7}-1.{n}.tar.gz"
        record = FileRecord.from_json(record_of(name, n, yanked=n % 3 == 0, yank_reason="bad" if n % 6 == 0 else None,
                                                uploader=None if n % 2 else "alice"))
        files[name] = SyncedFile(str(n), f"f{n}", record.sha256, record, f"r{n}")
    state.save(files)
    assert StateFile(state.control, STORE).load() == files


@pytest.mark.parametrize("damage, problem", [
    (lambda lines: lines[:1500] + [lines[1500].removeprefix(",")] + lines[1501:], "does not start with a comma"),
    (lambda lines: ["," + lines[0]] + lines[1:], "starts with a comma"),
    (lambda lines: lines[:1800] + [lines[1800].replace('"remote_version": "1800"', '"remote_version": 1800')]
     + lines[1801:], "strings"),
    (lambda lines: lines[:2100] + [lines[2100][:40]] + lines[2101:], None),
    (lambda lines: lines[:1200] + [lines[1200].rstrip("\n") + lines[1201]] + lines[1202:], "not exactly one entry"),
    (lambda lines: lines[:1300] + [lines[1300]] + lines[1300:], "not exactly one entry, or a name given twice"),
    (lambda lines: lines[:1399] + [lines[1250]] + lines[1400:], "given twice"),
])
def test_a_damaged_line_anywhere_makes_the_state_unreadable_not_partly_read(damage, problem) -> None:
    """A line damaged after the first few hundred (in a later parse call) is found as
    surely as one at the start: the whole state is refused (read as empty, which never
    deletes anything), not the entries before the damage taken as the state."""
    from gcs_sync.sync.state import entries_from_lines, state_lines

    entries = {f"p-1.{n}.tar.gz": SyncedFile(str(n), f"f{n}") for n in range(2_500)}
    lines = list(state_lines((name, entry.to_json()) for name, entry in entries.items()))
    assert entries_from_lines(lines) == entries
    with pytest.raises((ValueError, TypeError), match=problem):
        entries_from_lines(damage(lines))


@pytest.mark.parametrize("change", [
    {}, {"uploader": None, "requires_python": None}, {"yanked": True, "yank_reason": "broken"},
    {"metadata_sha256": "ab" * 32}, {"metadata_problem": "no METADATA"},
])
def test_a_record_of_the_usual_shape_reads_as_any_other(change: dict) -> None:
    """The quick path for records written here gives what the field-by-field one does."""
    from gcs_sync.records.record import FileRecord

    raw = record_of("p-1.0.tar.gz", 3, **change)
    quick = FileRecord.from_json(raw)
    assert quick.to_json() == raw
    import gcs_sync.records.record as record_module

    with pytest.MonkeyPatch.context() as patch:  # the field-by-field path unusable: the quick one is taken
        patch.setattr(record_module, "_TYPES", {})
        assert FileRecord.from_json(raw) == quick
    extra = {**raw, "unknown_field": 1}  # still the usual fields: read alike
    assert FileRecord.from_json(extra) == quick
    short = {key: value for key, value in raw.items() if value is not None}  # fields left out: the other path
    assert FileRecord.from_json(short) == quick


@pytest.mark.parametrize("field, value, problem", [
    ("size", True, "size is a boolean"), ("size", "3", "size is str"), ("sha256", None, "sha256 is missing"),
    ("uploader", 5, "uploader is int"), ("yanked", "no", "yanked is str"), ("format", 2, "format 2"),
    ("format", True, "format True"),
])
def test_a_record_of_another_shape_is_refused_naming_the_field(field: str, value: object, problem: str) -> None:
    from gcs_sync.records.record import FileRecord, RecordError

    with pytest.raises(RecordError, match=problem):
        FileRecord.from_json(record_of("p-1.0.tar.gz", 3, **{field: value}), "p-1.0.tar.gz")


def test_an_entry_read_from_the_state_is_packed_and_gives_what_was_saved(state: StateFile) -> None:
    """A worker holds every entry but uses few: an entry of the usual shape is read into
    one bytes object, its record's fields checked as it is read, and each field (its
    record too) made when asked for and not kept, so the entry never grows."""
    from gcs_sync.records.record import FileRecord

    files = {}
    for n in range(300):
        name = f"p-1.{n}.tar.gz"
        record = FileRecord.from_json(record_of(name, n, uploader=None if n % 2 else "alice"))
        files[name] = SyncedFile(str(n), f"f{n}", record.sha256, record, f"r{n}")
    files["old-1.0.tar.gz"] = SyncedFile("v", "f")  # no record (a format-2 entry): read as it is
    state.save(files)
    read = StateFile(state.control, STORE).load()
    packed = [name for name, entry in read.items() if object.__getattribute__(entry, "_packed") is not None]
    assert len(packed) == 300, "entries of the usual shape are packed"
    entry = read["p-1.7.tar.gz"]
    assert (entry.remote_version, entry.local_fingerprint, entry.sha256, entry.record_version) == \
        ("7", "f7", files["p-1.7.tar.gz"].sha256, "r7")
    assert entry.record == files["p-1.7.tar.gz"].record and entry.record.uploader is None
    assert read["p-1.8.tar.gz"].record.uploader == "alice"
    assert object.__getattribute__(entry, "_packed") is not None  # still packed: nothing kept
    with pytest.raises(AttributeError):
        object.__getattribute__(entry, "record")
    assert read == files  # every entry, field by field
    assert entry == files["p-1.7.tar.gz"] and hash(entry) == hash(files["p-1.7.tar.gz"])
    assert dataclasses.replace(entry, local_fingerprint="g") == SyncedFile("7", "g", entry.sha256, entry.record, "r7")
    with pytest.raises(AttributeError, match="no attribute 'recrod'"):
        entry.recrod  # noqa: B018  (a typo is still one)


@pytest.mark.parametrize("entry_sha256, record_sha256, metadata_sha256", [
    ("ab" * 32, "ab" * 32, "cd" * 32),  # the usual: lowercase hex, the entry's the record's
    ("AB" * 32, "AB" * 32, "CD" * 32),  # capitals: kept as they were written
    ("a b" * 21 + "c", "ab" * 32, None),  # 64 characters, not hex; the entry's differs from the record's
    (None, "ab" * 32, "z" * 64),  # no sha256 known; a metadata sha256 that is no hex
    ("ab" * 32, "x", "ab" * 31),  # other lengths
])
def test_a_packed_entry_gives_back_each_sha256_exactly_as_written(
        state: StateFile, entry_sha256: Optional[str], record_sha256: str, metadata_sha256: Optional[str]) -> None:
    from gcs_sync.records.record import FileRecord

    name = "p-1.0.tar.gz"
    record = FileRecord(name, 3, record_sha256, "2026-01-01T00:00:00.000000Z", None, ">=3.8", metadata_sha256)
    saved = SyncedFile("1", "", entry_sha256, record, "r1")
    state.save({name: saved})
    entry = StateFile(state.control, STORE).load()[name]
    assert object.__getattribute__(entry, "_packed") is not None
    assert entry == saved
    assert (entry.sha256, entry.record.sha256, entry.record.metadata_sha256) == \
        (entry_sha256, record_sha256, metadata_sha256)


def test_records_made_by_two_threads_at_once_are_equal(state: StateFile) -> None:
    import threading

    from gcs_sync.records.record import FileRecord

    files = {f"p-1.{n}.tar.gz": SyncedFile(str(n), "", f"{n:064x}", FileRecord.from_json(record_of(f"p-1.{n}.tar.gz", n)),
                                           f"r{n}") for n in range(2_000)}
    state.save(files)
    read = StateFile(state.control, STORE).load()
    seen: list[list[object]] = [[], []]
    barrier = threading.Barrier(2)

    def use(into: list[object]) -> None:
        barrier.wait()
        for entry in read.values():
            try:
                into.append(entry.record)
            except AttributeError as exc:  # (counted: it must never happen)
                into.append(exc)

    threads = [threading.Thread(target=use, args=(seen[k],)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = {entry.record.filename: entry.record for entry in files.values()}
    assert {record.filename: record for record in seen[0]} == {record.filename: record for record in seen[1]} == expected


@pytest.mark.parametrize("change", [{"size": "3"}, {"yanked": 1}, {"format": True}, {"uploader": 5}])
def test_a_record_of_the_wrong_shape_in_a_state_is_refused_when_read_not_when_used(
        state: StateFile, change: dict) -> None:
    """The checks a record made on first use relies on are made when the state is read:
    a wrong field anywhere makes the whole state unreadable then (read as empty)."""
    from gcs_sync.sync.state import entries_from_lines, state_lines

    good = {f"p-1.{n}.tar.gz": {"remote_version": str(n), "local_fingerprint": "", "sha256": f"{n:064x}",
                                "record": record_of(f"p-1.{n}.tar.gz", n), "record_version": "r"} for n in range(400)}
    bad = dict(good)
    bad["p-1.350.tar.gz"] = {**good["p-1.350.tar.gz"], "record": record_of("p-1.350.tar.gz", 350, **change)}
    assert len(entries_from_lines(list(state_lines(good.items())))) == 400
    with pytest.raises((ValueError, TypeError)):
        entries_from_lines(list(state_lines(bad.items())))


def test_a_state_prepared_from_lines_is_in_place_only_once_committed(state: StateFile, tmp_path: Path) -> None:
    """A cold start writes the snapshot's lines as the state while it checks them: nothing
    is in place (nor left behind) until it commits, and a discarded one leaves nothing."""
    from gcs_sync.sync.state import state_lines

    lines = "".join(state_lines((f"p-{n}.tar.gz", entry(n).to_json()) for n in range(50)))
    state.save({"old": entry(1)})
    before = sorted(p.name for p in tmp_path.iterdir())
    dropped = state.prepare_lines(lines.encode())
    dropped.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert StateFile(tmp_path, STORE).load() == {"old": entry(1)}
    kept = state.prepare_lines(lines.rstrip("\n").encode())  # a last line without its line break too
    kept.commit()
    kept.discard()  # after a commit: nothing
    assert StateFile(tmp_path, STORE).load() == {f"p-{n}.tar.gz": entry(n) for n in range(50)}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".")]


def test_a_state_that_cannot_be_written_is_an_error_at_its_commit(state: StateFile, tmp_path: Path) -> None:
    """(A folder that is a file: refused to root too, unlike a read-only folder.)"""
    from gcs_sync.sync.state import state_lines

    state.save({"old": entry(1)})
    lines = "".join(state_lines([("p-1.tar.gz", entry(2).to_json())]))
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the state's folder should be")
    with pytest.raises(OSError):
        StateFile(blocked, STORE).prepare_lines(lines.encode()).commit()
    assert blocked.read_text().startswith("a file") and StateFile(tmp_path, STORE).load() == {"old": entry(1)}


def test_entries_are_written_as_rows_where_their_record_allows_and_read_back_as_saved(state: StateFile) -> None:
    """A row holds the record's fields but its file name and sha256 (the entry's own): half
    the bytes. An entry whose record has another name or sha256, or no record, stays an
    object; every one reads back as saved."""
    from gcs_sync.records.record import FileRecord

    usual = FileRecord.from_json(record_of("a-1.0.tar.gz", 1, yanked=True, yank_reason="broken"))
    other_name = FileRecord.from_json(record_of("B-1.0.tar.gz", 2))
    files = {
        "a-1.0.tar.gz": SyncedFile("1", "f1", usual.sha256, usual, "r1"),
        "b-1.0.tar.gz": SyncedFile("2", "", other_name.sha256, other_name, "r2"),
        "c-1.0.tar.gz": SyncedFile("3", "", "ff" * 32, usual, None),  # a sha256 other than its record's
        "d-1.0.tar.gz": SyncedFile("4", "f4", None),  # no record yet
    }
    state.save(files)
    lines = state.path.read_text().splitlines()[1:-1]
    assert [line.lstrip(",").split(": ", 1)[1][0] for line in lines] == ["[", "{", "{", "{"]
    read = StateFile(state.control, STORE).load()
    assert read == files and read["a-1.0.tar.gz"].record == usual
    state.save(read)  # written again from entries whose records are not made yet: the same lines
    assert state.path.read_text().splitlines()[1:-1] == lines


@pytest.mark.parametrize("damage", [
    lambda row: row[:-1],  # a field short
    lambda row: row + [None],  # one too many
    lambda row: [*row[:4], "3", *row[5:]],  # size a string
    lambda row: [*row[:10], 1, row[11]],  # yanked a number
    lambda row: [*row[:3], 5, *row[4:]],  # record_version a number
    lambda row: [row[0], None, *row[2:]],  # no local fingerprint
])
def test_a_row_of_another_shape_anywhere_makes_the_state_unreadable(damage) -> None:
    from gcs_sync.records.record import FileRecord
    from gcs_sync.sync.state import entries_from_lines, entry_json, state_lines

    entries = {}
    for n in range(400):
        name = f"p-1.{n}.tar.gz"
        record = FileRecord.from_json(record_of(name, n))
        entries[name] = entry_json(name, SyncedFile(str(n), "", record.sha256, record, "r"))
    assert all(isinstance(row, list) for row in entries.values())
    assert len(entries_from_lines(list(state_lines(entries.items())))) == 400
    entries["p-1.333.tar.gz"] = damage(entries["p-1.333.tar.gz"])
    with pytest.raises(TypeError, match="p-1.333.tar.gz"):
        entries_from_lines(list(state_lines(entries.items())))


def test_whether_an_entry_has_a_record_is_told_without_making_it(state: StateFile) -> None:
    from gcs_sync.records.record import FileRecord

    record = FileRecord.from_json(record_of("p-1.0.tar.gz", 1))
    state.save({"p-1.0.tar.gz": SyncedFile("1", "", record.sha256, record, "r"), "q-1.0.tar.gz": SyncedFile("2", "")})
    read = StateFile(state.control, STORE).load()
    assert read["p-1.0.tar.gz"].has_record() and not read["q-1.0.tar.gz"].has_record()
    assert object.__getattribute__(read["p-1.0.tar.gz"], "_packed") is not None  # packed
    assert read["p-1.0.tar.gz"].record == record and read["p-1.0.tar.gz"].has_record()
