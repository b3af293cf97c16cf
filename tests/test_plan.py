"""The sync decision table: plan_sync is pure, so each row is plain data in, events out."""

from __future__ import annotations

import pytest

from gcs_sync.drivers.base import RemoteObject
from gcs_sync.sync.events import LocalAdded, LocalChanged, LocalDeleted, RemoteAdded, RemoteChanged, RemoteDeleted
from gcs_sync.sync.plan import plan_sync
from gcs_sync.sync.state import SyncedFile

N = "demo-1.0.tar.gz"
R1, R2 = RemoteObject(N, "v1", 3), RemoteObject(N, "v2", 3)
SYNCED = SyncedFile(remote_version="v1", local_fingerprint="f1")

# local fingerprint, remote object, synced entry -> expected events
TABLE = [
    ("nothing anywhere", None, None, None, []),
    ("new in the bucket", None, R1, None, [RemoteAdded(N, R1)]),
    ("changed in the bucket", "f1", R2, SYNCED, [RemoteChanged(N, R2)]),
    ("in step", "f1", R1, SYNCED, []),
    ("edited locally, the bucket's copy unchanged: pushed over that version", "f9", R1, SYNCED,
     [LocalChanged(N, "f9", "v1", None)]),
    ("edited locally and changed in the bucket: the bucket's copy wins", "f9", R2, SYNCED, [RemoteChanged(N, R2)]),
    ("on both sides, never synced: the bucket's copy wins", "f1", R1, None, [RemoteChanged(N, R1)]),
    ("deleted from the bucket", "f1", None, SYNCED, [RemoteDeleted(N)]),
    ("deleted from the bucket, edited locally: still deleted", "f9", None, SYNCED, [RemoteDeleted(N)]),
    ("new locally", "f1", None, None, [LocalAdded(N, "f1")]),
    ("deleted locally", None, R1, SYNCED, [LocalDeleted(N, "v1")]),
    ("deleted locally but changed in the bucket: download", None, R2, SYNCED, [RemoteAdded(N, R2)]),
    ("gone from both sides", None, None, SYNCED, []),
]


@pytest.mark.parametrize("case, local, remote, synced, expected", TABLE, ids=[row[0] for row in TABLE])
def test_decision_table(case, local, remote, synced, expected) -> None:
    other = "other-2.0.tar.gz"  # keeps the folder non-empty, so the wiped-folder rail stays off
    local_map = {other: "o"} | ({N: local} if local else {})
    remote_map = {other: RemoteObject(other, "o", 1)} | ({N: remote} if remote else {})
    synced_map = {other: SyncedFile("o", "o")} | ({N: synced} if synced else {})
    assert plan_sync(local_map, remote_map, synced_map, push_local_changes=True).events == expected


OTHER = "other-2.0.tar.gz"
WITH_OTHER = ({OTHER: "o"}, {OTHER: RemoteObject(OTHER, "o", 1)}, {OTHER: SyncedFile("o", "o")})


def test_without_pushing_a_file_lost_locally_is_downloaded_again() -> None:
    local, remote, synced = WITH_OTHER
    plan = plan_sync(local, remote | {N: R1}, synced | {N: SYNCED}, push_local_changes=False)
    assert plan.events == [RemoteAdded(N, R1)]


def test_without_pushing_a_file_added_locally_is_left_alone_and_reported() -> None:
    local, remote, synced = WITH_OTHER
    plan = plan_sync(local | {N: "f1"}, remote, synced, push_local_changes=False)
    assert plan.events == [] and plan.local_only == [N]


@pytest.mark.parametrize("push", [True, False])
def test_a_wiped_folder_never_deletes_the_bucket_and_its_state_is_reset(push: bool) -> None:
    plan = plan_sync({}, {N: R1}, {N: SYNCED}, push_local_changes=push)
    assert plan.events == [RemoteAdded(N, R1)]
    assert plan.state_reset and plan.base_state == {}


def test_a_new_empty_bucket_never_deletes_local_files_that_were_never_synced() -> None:
    assert plan_sync({N: "f1"}, {}, {}, push_local_changes=True).events == [LocalAdded(N, "f1")]


def test_state_drops_only_files_gone_from_both_sides() -> None:
    synced = {N: SYNCED, "gone-1.0.tar.gz": SyncedFile("g", "g"), "here-1.0.tar.gz": SyncedFile("h", "h")}
    plan = plan_sync({"here-1.0.tar.gz": "h"}, {N: R1}, synced, push_local_changes=True)
    assert set(plan.base_state) == {N, "here-1.0.tar.gz"}


def test_without_pushing_a_file_edited_locally_is_downloaded_again() -> None:
    local, remote, synced = WITH_OTHER
    plan = plan_sync(local | {N: "f9"}, remote | {N: R1}, synced | {N: SYNCED}, push_local_changes=False)
    assert plan.events == [RemoteChanged(N, R1)]


def test_a_file_still_being_written_is_neither_pushed_nor_replaced_until_it_settles() -> None:
    local, remote, synced = WITH_OTHER
    new, grown = "new-1.0.tar.gz", N
    plan = plan_sync(local | {new: "n1", grown: "f9"}, remote | {grown: R1}, synced | {grown: SYNCED},
                     push_local_changes=True, unsettled={new, grown})
    assert plan.events == [] and plan.local_only == []


def test_a_mirror_filling_its_folder_leaves_catalogued_files_to_the_fill() -> None:
    """``leave_catalogued``: a file catalogued and not yet here is not downloaded by the
    plan (the fill brings it); one changed in the bucket, or whose record changed, is
    catalogued again; a file new in the bucket is downloaded as ever."""
    from gcs_sync.drivers.base import Version
    from gcs_sync.records.record import FileRecord
    from gcs_sync.sync.events import Catalogued
    from gcs_sync.sync.state import CATALOGUED

    def catalogued(name: str) -> SyncedFile:
        record = FileRecord(name, 3, "ab" * 32, "2026-12-05T00:00:00Z")
        return SyncedFile(Version("v1"), CATALOGUED, "ab" * 32, record, Version("r1"))

    same, moved, relabelled, new = "same-1.0.tar.gz", "moved-1.0.tar.gz", "rec-1.0.tar.gz", "new-1.0.tar.gz"
    remote = {same: RemoteObject(same, Version("v1"), 3), moved: RemoteObject(moved, Version("v2"), 3),
              relabelled: RemoteObject(relabelled, Version("v1"), 3), new: RemoteObject(new, Version("v1"), 3)}
    synced = {name: catalogued(name) for name in (same, moved, relabelled)}
    records = {same: Version("r1"), moved: Version("r1"), relabelled: Version("r2")}
    plan = plan_sync({}, remote, synced, push_local_changes=False, records=records, leave_catalogued=True)
    assert plan.events == [Catalogued(moved, remote[moved], Version("r1")), RemoteAdded(new, remote[new]),
                           Catalogued(relabelled, remote[relabelled], Version("r2"))]
    assert not plan.state_reset and plan.base_state == synced  # catalogued: never files here to lose
    # Without it (a pull): every catalogued file is downloaded.
    pulled = plan_sync({}, remote, synced, push_local_changes=False, records=records)
    assert sorted(type(e).__name__ for e in pulled.events) == ["RemoteAdded"] * 4


def test_a_file_a_dead_fill_left_unrecorded_is_never_pushed_back() -> None:
    """A fill renamed a file into place and died before recording it: its entry is still
    catalogued. Gone from the bucket since: removed here (even with PUSH_LOCAL_CHANGES),
    never uploaded again; still there: left to the fill, or downloaded again by a pull."""
    from gcs_sync.drivers.base import Version
    from gcs_sync.sync.events import Catalogued
    from gcs_sync.sync.state import CATALOGUED

    catalogued = {N: SyncedFile(Version("v1"), CATALOGUED, "ab" * 32)}
    for push in (True, False):
        for leave in (True, False):
            gone = plan_sync({N: "f1"}, {}, catalogued, push_local_changes=push, leave_catalogued=leave,
                             partial=True)
            assert gone.events == [RemoteDeleted(N)]
            kept = plan_sync({N: "f1"}, {N: R1}, catalogued, push_local_changes=push, leave_catalogued=leave,
                             partial=True)
            # A mirror's fill replaces it (outside the lock); a pull downloads it again.
            # (Catalogued: this entry has no record yet; read, no download.)
            assert kept.events == ([Catalogued(N, R1, None)] if leave else [RemoteChanged(N, R1)])

