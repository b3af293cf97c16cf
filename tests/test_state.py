"""The synced state as its readers see it: every worker's index reads it without the
folder lock, so a reader must get either what changed since it last looked or, after a
compaction, the whole state, never a mix."""

from __future__ import annotations

from pathlib import Path

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
    from gcs_sync.sync.state import CATALOGUED, TrackedState

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
