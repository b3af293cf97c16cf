"""A worker's packed copy of the state (gcs_sync/sync/tracked.py): whatever the form an
entry is held in, what a reader gets is what was recorded, name by name, as a dict of
entry objects would give it; and a worker that follows changes for long holds no more."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from gcs_sync.records.record import FileRecord
from gcs_sync.sync import tracked as tracked_module
from gcs_sync.sync.state import CATALOGUED, StateFile, SyncedFile
from gcs_sync.sync.tracked import EntriesView, PackedEntries, TrackedState
from gcs_sync.web.index import PackageIndex

STORE = "gs://bucket/packages/"


def with_record(name: str, n: int, fingerprint: str = CATALOGUED) -> SyncedFile:
    record = FileRecord(name, n, f"{n:064x}", "2026-12-05T09:00:00.000000Z", "alice", ">=3.8", f"{n + 1:064x}")
    return SyncedFile(f"v{n}", fingerprint, record.sha256, record, f"r{n}")


# Names as odd as a bucket may hold: non-ASCII (sorted by code point, not by a locale),
# one whose UTF-8 is longer than its characters, and a lone surrogate (JSON may carry one).
ODD_NAMES = ["Zeta-1.0.tar.gz", "a-1.0.tar.gz", "ä-1.0.tar.gz", "\U0001f600-1.0.tar.gz", "b\ud800-1.0.tar.gz",
             "a-1.0.tar.gz.metadata", "a-1.0-py3-none-any.whl"]


def entries_of_every_kind() -> dict[str, SyncedFile]:
    entries = {name: with_record(name, n, fingerprint="" if n % 2 else f"1:{n}:2") for n, name in enumerate(ODD_NAMES)}
    entries["plain-1.0.tar.gz"] = SyncedFile("v", "f")  # no record: held as its JSON object
    entries["other-1.0.tar.gz"] = SyncedFile("v", "", "ab" * 32, with_record("elsewhere-1.0.tar.gz", 3).record, None)
    entries["caps-1.0.tar.gz"] = SyncedFile("v", "", "AB" * 32, with_record("caps-1.0.tar.gz", 4).record, "r")
    return entries


@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_packed_entries_give_back_every_entry_by_name_and_by_position(order: str) -> None:
    entries = entries_of_every_kind()
    items = sorted(entries.items())
    if order == "shuffled":
        random.Random(7).shuffle(items)
    packed = PackedEntries.build(iter(items))
    assert len(packed) == len(entries) and packed.catalogued == sum(e.local_fingerprint == "" for e in entries.values())
    assert list(packed) == sorted(entries)  # code point order, whatever the input's
    assert dict(packed.items()) == entries
    for position, name in enumerate(sorted(entries)):
        assert packed.find(name) == position and packed.name_at(position) == name
        assert packed[name] == entries[name] and packed.entry_at(position).record == entries[name].record
        assert packed.fingerprint_at(position) == entries[name].local_fingerprint
        assert packed.is_catalogued(position) == (entries[name].local_fingerprint == CATALOGUED)
    for missing in ["", "a", "a-1.0.tar.g", "a-1.0.tar.gz ", "\udfff", "zzz"]:
        assert packed.find(missing) == -1 and missing not in packed and packed.get(missing) is None
    with pytest.raises(KeyError):
        packed["zzz"]  # noqa: B018


@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_a_name_given_twice_is_refused(order: str) -> None:
    items = [(f"p-1.{n}.tar.gz", with_record(f"p-1.{n}.tar.gz", n)) for n in range(20)]
    items.insert(5 if order == "sorted" else 0, items[4] if order == "sorted" else items[12])
    with pytest.raises(ValueError, match="given twice"):
        PackedEntries.build(iter(items))


def test_a_packed_state_is_much_smaller_than_its_entries_as_objects() -> None:
    import sys

    entries = {f"proj_{n % 500:03d}-1.0.{n}-py3-none-any.whl": with_record(f"proj_{n % 500:03d}-1.0.{n}-py3-none-any.whl", n)
               for n in range(2_000)}
    packed = PackedEntries.build(iter(entries.items()))
    packed_bytes = sum(map(sys.getsizeof, (packed._names, packed._name_starts, packed._blob, packed._starts,
                                           packed._catalogued_flags)))
    assert packed_bytes < 300 * len(entries)  # (as objects: about 900 bytes per entry)


@pytest.fixture
def state(tmp_path: Path) -> StateFile:
    return StateFile(tmp_path, STORE)


def test_a_tracked_state_answers_as_the_state_file_does_through_changes_and_folds(
        state: StateFile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Changes are kept beside the packed entries, and packed with them once they are many
    (here: more than 4): every answer stays the file's own."""
    monkeypatch.setattr(tracked_module, "_FOLD_MIN_CHANGES", 4)
    files = entries_of_every_kind()
    state.save(files)
    tracked = TrackedState(StateFile(tmp_path, STORE))
    rng = random.Random(3)
    names = sorted(files) + [f"new-1.{n}.tar.gz" for n in range(10)]
    folds = 0
    cursor = None
    follower: dict[str, SyncedFile] = {}  # a reader that applies what changed, as the index does
    for step in range(60):
        base = tracked._base
        name = rng.choice(names)
        if rng.random() < 0.3:
            state.record(name, None)
        else:
            state.record(name, with_record(name, step, fingerprint=rng.choice(["", f"1:{step}:9"])))
        expected = state.load()
        assert tracked.current() == expected
        folds += tracked._base is not base
        read = tracked.read(cursor)
        if read.files is not None:
            follower = dict(read.files.items())
        for changed, entry in read.entries:
            if entry is None:
                follower.pop(changed, None)
            else:
                follower[changed] = entry
        cursor = read.cursor
        assert follower == expected
        assert len(tracked._changes) <= len(tracked._base) // 8 + 4
        assert tracked.lookup([name, "nothing-1.0.tar.gz"]) == ({name: expected[name]} if name in expected else {})
        assert tracked.lookup_any() == bool(expected)
        assert tracked.catalogued_count() == sum(e.local_fingerprint == CATALOGUED for e in expected.values())
        assert tracked.catalogued_names() == sorted(n for n, e in expected.items() if e.local_fingerprint == CATALOGUED)
        held = {n for n, e in expected.items() if e.local_fingerprint != CATALOGUED}
        assert tracked.all_in(set(expected)) and tracked.all_in(held, except_catalogued=True)
        if held:
            assert not tracked.all_in(held - {min(held)}, except_catalogued=True)
        view = tracked.read().files
        assert isinstance(view, EntriesView) and dict(view.items()) == expected and len(view) == len(expected)
        assert set(view) == set(expected) and all(n in view for n in expected) and "nothing" not in view
    assert folds >= 3 and tracked._generation == 1  # a fold changes no reader's cursor


def test_a_name_with_a_line_break_is_kept_as_any_other() -> None:
    """No package file name holds one, but an older release's state may."""
    entries = {name: with_record(name, n) for n, name in enumerate(["a-1.0.tar.gz", "a\n-1.0.tar.gz", "b-1.0.tar.gz"])}
    packed = PackedEntries.build(iter(sorted(entries.items())))
    assert packed.names() == sorted(entries) and dict(packed.items()) == entries
    assert packed.find("a\n-1.0.tar.gz") == sorted(entries).index("a\n-1.0.tar.gz") and list(packed.catalogued_names()) == sorted(entries)


def test_a_whole_read_with_a_long_journal_is_packed_at_once(state: StateFile, tmp_path: Path) -> None:
    state.save({})
    state.record_many((f"p-1.{n}.tar.gz", with_record(f"p-1.{n}.tar.gz", n)) for n in range(50))
    tracked = TrackedState(StateFile(tmp_path, STORE))
    assert len(tracked.current()) == 50
    assert len(tracked._base) == 50 and not tracked._changes


def test_adopting_entries_takes_them_packed(state: StateFile) -> None:
    tracked = TrackedState(state)
    files = entries_of_every_kind()
    state.save(files)
    tracked.adopt(PackedEntries.build(iter(files.items())), state.snapshot_cursor())
    assert tracked.current() == files and not tracked._changes
    tracked.adopt(files, state.snapshot_cursor())  # a dict: packed as it is taken
    assert isinstance(tracked._base, PackedEntries) and tracked.current() == files


# -- the index over it -------------------------------------------------------------------------


def catalogued_index(tmp_path: Path, state: StateFile) -> tuple[PackageIndex, TrackedState]:
    from gcs_sync.sync.folder import PackageFolder

    tracked = TrackedState(StateFile(tmp_path, STORE))
    return PackageIndex(PackageFolder(tmp_path / "packages"), tracked, "sha256"), tracked


def index_listing(index: PackageIndex) -> dict[str, str]:
    return {pkg.relfn: pkg.remote_version for pkg in index.all_packages()}


def test_the_index_follows_changes_and_is_made_again_from_the_packed_state_when_they_pile_up(
        state: StateFile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracked_module, "_FOLD_MIN_CHANGES", 4)
    state.save({f"p{n % 3}-1.{n}.tar.gz": with_record(f"p{n % 3}-1.{n}.tar.gz", n) for n in range(40)})
    index, _ = catalogued_index(tmp_path, state)
    index.refresh()
    rng = random.Random(5)
    names = [f"p{n % 4}-1.{n}.tar.gz" for n in range(50)]
    rebuilds = 0
    for step in range(80):
        listing = index._listing
        name = rng.choice(names)
        state.record(name, None if rng.random() < 0.3 else with_record(name, 100 + step))
        index.refresh()
        rebuilds += index._listing is not listing
        expected = {n: e.remote_version for n, e in state.load().items()}
        assert index_listing(index) == expected and len(index) == len(expected) == index.not_held()
        assert sorted(index.projects()) == sorted({n.split("-")[0] for n in expected})
        assert all(index.get(n) is not None for n in expected) and index.get("p9-1.0.tar.gz") is None
        assert len(index._listing.changed) <= len(index._listing.base) // 8 + 4
    assert rebuilds >= 3


def test_a_walk_over_every_file_gets_each_once_while_a_change_is_applied(
        state: StateFile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A walk (pypiserver's /packages/ page) builds projects without the index's lock: a
    change applied meanwhile gives each file once (as it was, or as it is after)."""
    state.save({f"demo-1.{n}.tar.gz": with_record(f"demo-1.{n}.tar.gz", n) for n in range(3)})
    index, _ = catalogued_index(tmp_path, state)
    index.refresh()
    entry_at = PackedEntries.entry_at
    applied = []

    def entry_at_with_a_change_meanwhile(self: PackedEntries, position: int) -> SyncedFile:
        if position == 2 and not applied:  # another thread's refresh, as the walk reaches the last
            applied.append(True)
            index._apply([("demo-1.2.tar.gz", with_record("demo-1.2.tar.gz", 99)), ("demo-1.1.tar.gz", None)])
        return entry_at(self, position)

    monkeypatch.setattr(PackedEntries, "entry_at", entry_at_with_a_change_meanwhile)
    walked = [(pkg.relfn, pkg.remote_version) for pkg in index.all_packages()]
    assert applied and [name for name, _ in walked] == ["demo-1.0.tar.gz", "demo-1.1.tar.gz", "demo-1.2.tar.gz"]
    assert dict(walked)["demo-1.2.tar.gz"] in ("v2", "v99")
    monkeypatch.undo()
    assert index_listing(index) == {"demo-1.0.tar.gz": "v0", "demo-1.2.tar.gz": "v99"}  # and after it, as it is
