"""The change feed (gcs_sync/sync/feed.py) between instances, on the three backends.

Each instance here is a ``StorageClient`` in this process with its own folder and its own
driver (so its bucket calls are its own), as a gunicorn instance has. What an instance
serves is its state (what its index is built from). Clocks are the one thing no server
can skew on demand: a writer's clock is given to its client (``wall_clock``), so entries
it names carry that time, as a host with a wrong clock would write them.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Callable, Optional

import pytest

from gcs_sync.drivers import FileStoreDriver, make_driver
from gcs_sync.ops.records import set_yanked
from gcs_sync.records.compute import compute_record
from gcs_sync.records.record import upload_time
from gcs_sync.sync.client import StorageClient
from gcs_sync.clock import Moment
from gcs_sync.sync.feed import FEED_FOLDER, ChangeFeed, ChangeKind, PositionFile, parse_entry
from gcs_sync.sync.folder import PackageFolder
from gcs_sync.sync.state import CATALOGUED, SyncedFile
from testkit.buckets import BucketProbe
from testkit.packages import make_wheel

from .conftest import settings_for
from .views import age_view

SKEW = 300.0


class Instance:
    """One instance: a folder, a driver of its own, a client; ``catalog`` for
    PACKAGE_FILES cache/redirect (no package file held here), ``fill`` for a mirror server
    (a cold start from a catalog snapshot, the files fetched in the background)."""

    def __init__(self, bucket: BucketProbe, folder: Path, *, catalog: bool = False, fill: bool = False,
                 wall_clock: Callable[[], float] = time.time, users_seen: Optional[list[bool]] = None) -> None:
        self.driver: FileStoreDriver = make_driver(settings_for(bucket, folder))
        self.folder = PackageFolder(folder)
        self.users_seen = users_seen if users_seen is not None else []
        self.client = StorageClient(
            self.driver, self.folder, sync_interval=1, lock_timeout=5, full_sync_interval=3600,
            catalog=catalog, fill_in_background=fill, feed_clock_skew=SKEW, wall_clock=wall_clock,
            after_check=self.users_seen.append,
        )

    def upload(self, wheel: Path) -> None:
        with wheel.open("rb") as stream:
            staged = self.folder.stage(wheel.name, stream)
        record, metadata = compute_record(staged.path, wheel.name, sha256=staged.sha256, size=staged.size,
                                          upload_time=upload_time(time.time()), uploader=None)
        self.client.publish([dataclasses.replace(staged, record=record, metadata=metadata)], overwrite=False)

    def check(self) -> dict[str, int]:
        """One check after SYNC_INTERVAL; the bucket calls it made, by operation."""
        age_view(self.client, 2)
        assert self.client.wait_for_maintenance()  # an earlier full listing's snapshot: not this check's calls
        before = dict(self.driver.calls)
        self.client.refresh_now()
        assert self.client.wait_for_maintenance()
        return {op: n - before.get(op, 0) for op, n in self.driver.calls.items() if n - before.get(op, 0)}

    def served(self) -> dict[str, SyncedFile]:
        return self.client.state.load()


@pytest.fixture
def writer(bucket: BucketProbe, tmp_path: Path) -> Instance:
    return Instance(bucket, tmp_path / "a")


def _started(instance: Instance) -> Instance:
    instance.client.sync()
    assert instance.client.wait_for_maintenance()
    return instance


def test_an_upload_reaches_another_instance_with_one_feed_listing_and_no_full_listing(
    bucket: BucketProbe, tmp_path: Path, writer: Instance
) -> None:
    reader = _started(Instance(bucket, tmp_path / "b"))
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    writer.upload(wheel)
    calls = reader.check()
    assert calls["list"] == 1, calls  # the feed, from where this instance stood: no listing of the bucket
    assert wheel.name in reader.served() and (reader.folder.path / wheel.name).read_bytes() == wheel.read_bytes()
    assert reader.served()[wheel.name].record is not None
    assert reader.check().get("list") == 1  # nothing new: one listing call, nothing else
    assert set(reader.check()) == {"list"}


def test_catalog_instances_take_an_upload_in_two_bucket_calls_without_its_bytes(
    bucket: BucketProbe, tmp_path: Path, writer: Instance
) -> None:
    reader = _started(Instance(bucket, tmp_path / "b", catalog=True))
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    writer.upload(wheel)
    calls = reader.check()
    assert sum(calls.values()) <= 2 and calls["list"] == 1, calls  # the feed, then the file's record
    entry = reader.served()[wheel.name]
    assert entry.local_fingerprint == CATALOGUED and entry.record is not None
    assert entry.record.sha256 == entry.sha256 and entry.record.size == wheel.stat().st_size
    assert not (reader.folder.path / wheel.name).exists()  # no package bytes here


@pytest.mark.parametrize("catalog", [False, True], ids=["mirror", "catalog"])
def test_removal_yank_and_users_reach_another_instance_through_the_feed(
    bucket: BucketProbe, tmp_path: Path, writer: Instance, catalog: bool
) -> None:
    reader = _started(Instance(bucket, tmp_path / "b", catalog=catalog))
    kept, removed = make_wheel(tmp_path / "dist", "demo", "1.0"), make_wheel(tmp_path / "dist", "demo", "2.0")
    writer.upload(kept)
    writer.upload(removed)
    reader.check()
    assert {kept.name, removed.name} <= set(reader.served())

    writer.client.retract([removed.name])
    set_yanked(writer.driver, "demo", "1.0", yanked=True, reason="broken")
    ChangeFeed(writer.driver).announce(ChangeKind.USERS)  # what `users add` does after writing the object
    reader.users_seen.clear()
    calls = reader.check()
    assert calls["list"] == 1 and "list_objects" not in calls, calls
    served = reader.served()
    assert removed.name not in served
    record = served[kept.name].record
    assert record is not None and record.yanked and record.yank_reason == "broken"
    assert reader.users_seen == [True]  # told to read the users again
    assert not (reader.folder.path / removed.name).exists()


@pytest.mark.parametrize("offsets", [(200.0, -90.0), (-90.0, 200.0), (0.0, -SKEW + 70)],
                         ids=["ahead-then-behind", "behind-then-ahead", "behind-by-the-bound"])
def test_writers_whose_clocks_differ_by_up_to_the_bound_miss_nothing(
    bucket: BucketProbe, tmp_path: Path, offsets: tuple[float, float]
) -> None:
    """Two writers 290 s apart at most (FEED_CLOCK_SKEW 300): a reader that has taken the
    first one's entry (its position moves to that time) still lists the second's, named
    up to 290 s earlier."""
    first = Instance(bucket, tmp_path / "a", wall_clock=lambda: time.time() + offsets[0])
    second = Instance(bucket, tmp_path / "c", wall_clock=lambda: time.time() + offsets[1])
    reader = _started(Instance(bucket, tmp_path / "b"))
    one, two = make_wheel(tmp_path / "dist", "one", "1.0"), make_wheel(tmp_path / "dist", "two", "1.0")
    first.upload(one)
    reader.check()
    assert one.name in reader.served()
    second.upload(two)
    calls = reader.check()
    assert two.name in reader.served(), bucket.feed_names()
    assert calls["list"] == 1


def test_two_writers_at_the_same_millisecond_both_reach_the_reader(bucket: BucketProbe, tmp_path: Path) -> None:
    frozen = time.time()
    a = Instance(bucket, tmp_path / "a", wall_clock=lambda: frozen)
    c = Instance(bucket, tmp_path / "c", wall_clock=lambda: frozen)
    reader = _started(Instance(bucket, tmp_path / "b"))
    one, two = make_wheel(tmp_path / "dist", "one", "1.0"), make_wheel(tmp_path / "dist", "two", "1.0")
    a.upload(one)
    c.upload(two)
    entries = [parse_entry(name) for name in bucket.feed_names()]
    assert len({e.ms for e in entries if e is not None}) == 1 and len(entries) == 2
    reader.check()
    assert {one.name, two.name} <= set(reader.served())


def test_an_entry_seen_once_is_not_applied_again(bucket: BucketProbe, tmp_path: Path, writer: Instance) -> None:
    reader = _started(Instance(bucket, tmp_path / "b"))
    writer.upload(make_wheel(tmp_path / "dist", "demo", "1.0"))
    assert reader.check().get("download", 0) >= 1
    assert reader.check() == {"list": 1}  # the same entry is listed again (inside the window) and skipped


def test_a_reader_whose_position_is_older_than_the_retention_lists_the_bucket(
    bucket: BucketProbe, tmp_path: Path, writer: Instance
) -> None:
    reader = _started(Instance(bucket, tmp_path / "b"))
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    writer.upload(wheel)
    # A day without reading the feed (by this boot's monotonic clock): its entries may
    # have expired. The listing itself is recent: only the feed says "too old".
    positions = PositionFile(reader.folder.control, reader.driver.url)
    position = positions.load()
    assert position is not None and position.read_at is not None
    positions.save(dataclasses.replace(position, read_at=Moment(position.read_at.monotonic - 86400,
                                                                 position.read_at.boot)))
    before = reader.driver.calls["list"]
    reader.check()
    # A full listing: the feed's new start, the packages, (the pending uploads,) the records.
    assert reader.driver.calls["list"] - before >= 3
    assert wheel.name in reader.served()


def test_entries_older_than_the_retention_by_the_stores_clock_are_deleted_by_a_full_listing(
    bucket: BucketProbe, tmp_path: Path, writer: Instance
) -> None:
    """Expiry goes by the store's times of the entries (no host's clock decides): an entry
    stored more than FEED_RETENTION before the newest one goes; a host whose clock is a
    day ahead deletes nothing newer."""
    feed = ChangeFeed(writer.driver, retention=86400.0)
    writer.upload(make_wheel(tmp_path / "dist", "demo", "1.0"))
    ahead = Instance(bucket, tmp_path / "b", wall_clock=lambda: time.time() + 86400 + 1)
    ahead.client.sync()
    assert ahead.client.wait_for_maintenance()
    assert len(bucket.feed_names()) == 1  # a clock a day ahead deletes nothing
    if bucket.backend != "local":
        return  # the store's times can only be set back on a folder
    (old,) = bucket.feed_names()
    path = Path(bucket.name) / "packages" / old
    os.utime(path, (time.time() - 86400 - 60, time.time() - 86400 - 60))
    writer.upload(make_wheel(tmp_path / "dist", "demo", "2.0"))  # the newest entry: now
    assert feed.expire() == 1
    assert old not in bucket.feed_names() and len(bucket.feed_names()) == 1


def test_a_filename_too_long_for_an_entry_name_is_read_from_the_entry(
    bucket: BucketProbe, tmp_path: Path, writer: Instance
) -> None:
    reader = _started(Instance(bucket, tmp_path / "b", catalog=True))
    wheel = make_wheel(tmp_path / "dist", "a" * 200, "1.0")
    writer.upload(wheel)
    (entry,) = bucket.feed_names()
    assert entry.endswith(".~")
    reader.check()
    assert wheel.name in reader.served()


def test_a_foreign_object_in_the_feed_folder_is_ignored(bucket: BucketProbe, tmp_path: Path, writer: Instance) -> None:
    reader = _started(Instance(bucket, tmp_path / "b"))
    writer.driver.put_note(FEED_FOLDER + "9999999999999-zzz", b"not an entry")
    writer.upload(make_wheel(tmp_path / "dist", "demo", "1.0"))
    reader.check()
    assert "demo-1.0-py3-none-any.whl" in reader.served()


def test_a_catalog_cold_start_downloads_no_package_bytes(bucket: BucketProbe, tmp_path: Path, writer: Instance) -> None:
    wheels = [make_wheel(tmp_path / "dist", f"p{i}", "1.0") for i in range(3)]
    for wheel in wheels:
        writer.upload(wheel)
    cold = Instance(bucket, tmp_path / "b", catalog=True)
    cold.client.sync()
    assert set(cold.served()) == {w.name for w in wheels}
    assert cold.driver.calls["download"] == 3  # the three records, never a package file
    assert [p.name for p in cold.folder.path.iterdir() if not p.name.startswith(".")] == []


def test_a_catalog_cold_start_reads_one_snapshot_and_the_feed_since(
    bucket: BucketProbe, tmp_path: Path, writer: Instance
) -> None:
    wheels = [make_wheel(tmp_path / "dist", f"p{i}", "1.0") for i in range(3)]
    for wheel in wheels[:2]:
        writer.upload(wheel)
    writer.client.sync()  # a complete full listing: the first snapshot of this bucket
    assert writer.client.wait_for_maintenance()
    assert len([n for n in bucket.all_names() if n.startswith(".gcs_sync/snapshots/")]) == 1
    writer.upload(wheels[2])  # after the snapshot: only the feed has it

    cold = Instance(bucket, tmp_path / "b", catalog=True)
    cold.client.refresh_now()
    assert set(cold.served()) == {w.name for w in wheels}
    # The snapshots' listing, the snapshot, the feed, and the new file's record: never a
    # listing of the bucket nor one read per file.
    assert cold.driver.calls["list"] == 2 and cold.driver.calls["download"] == 2, dict(cold.driver.calls)
    assert all(entry.record is not None for entry in cold.served().values())
    assert cold.client.status()["status"] == "ok"
    assert cold.check() == {"list": 1}  # then the feed as usual


def test_a_snapshot_is_written_at_most_once_per_interval(bucket: BucketProbe, tmp_path: Path, writer: Instance) -> None:
    writer.upload(make_wheel(tmp_path / "dist", "demo", "1.0"))
    writer.client.sync()
    assert writer.client.wait_for_maintenance()
    writer.client.sync()
    assert writer.client.wait_for_maintenance()
    assert len([n for n in bucket.all_names() if n.startswith(".gcs_sync/snapshots/")]) == 1


def test_an_upload_through_a_catalog_instance_keeps_no_file_here(bucket: BucketProbe, tmp_path: Path) -> None:
    catalog = _started(Instance(bucket, tmp_path / "a", catalog=True))
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    catalog.upload(wheel)
    entry = catalog.served()[wheel.name]
    assert entry.local_fingerprint == CATALOGUED and entry.record is not None
    assert [p.name for p in catalog.folder.path.iterdir() if not p.name.startswith(".")] == []
    assert bucket.get(wheel.name) == wheel.read_bytes()


def test_a_folder_catalogued_then_mirrored_with_push_local_changes_deletes_nothing(
    bucket: BucketProbe, tmp_path: Path, writer: Instance
) -> None:
    """PACKAGE_FILES switched from cache back to mirror: the catalogued files were never
    here, so their absence is not a deletion (dev's PUSH_LOCAL_CHANGES pushes deletions)."""
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    writer.upload(wheel)
    _started(Instance(bucket, tmp_path / "b", catalog=True))
    # A file of its own in the folder (so it is not an emptied folder, which starts afresh).
    (tmp_path / "b" / "own-1.0.tar.gz").write_bytes(b"own")
    mirror = Instance(bucket, tmp_path / "b")
    mirror.client.push_local_changes = True  # as dev's default
    mirror.client._engine.push_local_changes = True
    mirror.client.sync()
    assert bucket.get(wheel.name) == wheel.read_bytes()
    assert (mirror.folder.path / wheel.name).read_bytes() == wheel.read_bytes()


# -- clocks, failures and half uploads (an adversarial review's findings) ----------------

HOUR = 3600.0


def _snapshots(bucket: BucketProbe) -> list[str]:
    return sorted(n for n in bucket.all_names() if n.startswith(".gcs_sync/snapshots/"))


def test_a_reader_whose_own_clock_is_ahead_still_takes_uploads_from_the_feed(
    bucket: BucketProbe, tmp_path: Path, writer: Instance
) -> None:
    """Only the writers' clocks name entries: a reader 10 minutes ahead misses nothing."""
    reader = _started(Instance(bucket, tmp_path / "b", wall_clock=lambda: time.time() + 600))
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    writer.upload(wheel)
    calls = reader.check()
    assert calls["list"] == 1, calls  # the feed only
    assert wheel.name in reader.served()


def test_an_entry_from_a_clock_far_ahead_does_not_cost_others_their_skew_allowance(
    bucket: BucketProbe, tmp_path: Path
) -> None:
    """A host an hour ahead: its entry is applied, but the position does not move to it,
    so a host 2 minutes behind is still read."""
    fast = Instance(bucket, tmp_path / "fast", wall_clock=lambda: time.time() + HOUR)
    slow = Instance(bucket, tmp_path / "slow", wall_clock=lambda: time.time() - 120)
    reader = _started(Instance(bucket, tmp_path / "b"))
    fast_wheel, slow_wheel = make_wheel(tmp_path / "dist", "fast", "1.0"), make_wheel(tmp_path / "dist", "slow", "1.0")
    fast.upload(fast_wheel)
    reader.check()
    slow.upload(slow_wheel)
    calls = reader.check()
    assert calls["list"] == 1, calls
    assert {fast_wheel.name, slow_wheel.name} <= set(reader.served())


def test_a_writer_an_hour_behind_names_its_entries_after_what_it_has_read(
    bucket: BucketProbe, tmp_path: Path, writer: Instance
) -> None:
    """A host whose clock is an hour behind (more than FEED_CLOCK_SKEW) names its entries
    no earlier than the newest it has read, so readers' windows still hold them."""
    reader = _started(Instance(bucket, tmp_path / "b"))
    behind = _started(Instance(bucket, tmp_path / "c", wall_clock=lambda: time.time() - HOUR))
    writer.upload(make_wheel(tmp_path / "dist", "first", "1.0"))
    reader.check()
    behind.check()  # it has read the first entry
    wheel = make_wheel(tmp_path / "dist", "late", "1.0")
    behind.upload(wheel)
    calls = reader.check()
    assert calls["list"] == 1, calls
    assert wheel.name in reader.served()


def test_a_cold_catalog_instance_skips_a_snapshot_named_by_a_fast_clock(
    bucket: BucketProbe, tmp_path: Path
) -> None:
    fast = Instance(bucket, tmp_path / "fast", wall_clock=lambda: time.time() + 2 * HOUR)
    fast.upload(make_wheel(tmp_path / "dist", "early", "1.0"))
    fast.client.sync()
    assert fast.client.wait_for_maintenance() and len(_snapshots(bucket)) == 1
    correct = Instance(bucket, tmp_path / "correct")
    later = make_wheel(tmp_path / "dist", "later", "1.0")
    correct.upload(later)
    cold = Instance(bucket, tmp_path / "cold", catalog=True)
    cold.client.refresh_now()
    assert later.name in cold.served()


def test_a_snapshot_is_not_written_while_a_file_lacks_a_stored_record(
    bucket: BucketProbe, tmp_path: Path, writer: Instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record that could not be read this time (the file is served all the same): a
    snapshot then would leave the file out for every new catalog instance."""
    from gcs_sync.errors import StorageError
    from gcs_sync.sync.records import RecordKeeper

    wheels = [make_wheel(tmp_path / "dist", f"p{i}", "1.0") for i in range(2)]
    for wheel in wheels:
        writer.upload(wheel)
    mirror = Instance(bucket, tmp_path / "m")
    real_attach = RecordKeeper.attach

    def flaky(self: RecordKeeper, name: str, *args: object, **kwargs: object) -> object:
        if name == wheels[1].name:
            raise StorageError("download", name, "503 from the bucket (once)")
        return real_attach(self, name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(RecordKeeper, "attach", flaky)  # no server fails one read on demand
    mirror.client.sync()
    assert mirror.client.wait_for_maintenance()
    monkeypatch.setattr(RecordKeeper, "attach", real_attach)
    assert wheels[1].name in mirror.served() and _snapshots(bucket) == []
    cold = Instance(bucket, tmp_path / "cold", catalog=True)
    cold.client.refresh_now()
    assert {w.name for w in wheels} <= set(cold.served())


def test_one_file_that_keeps_failing_does_not_make_every_check_redo_every_later_change(
    bucket: BucketProbe, tmp_path: Path, writer: Instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The position moves on; the failing file alone is tried again at each check."""
    from gcs_sync.errors import StorageError

    reader = _started(Instance(bucket, tmp_path / "b"))
    bad = make_wheel(tmp_path / "dist", "bad", "1.0")
    writer.upload(bad)
    real_download = type(reader.driver).download

    def failing(self: object, name: str, *args: object, **kwargs: object) -> object:
        if name == bad.name:
            raise StorageError("download", name, "403: this object is not readable by this instance")
        return real_download(self, name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(type(reader.driver), "download", failing)  # a store refusing one object
    reader.check()
    for i in range(5):
        writer.upload(make_wheel(tmp_path / "dist", f"good{i}", "1.0"))
    reader.check()
    calls = reader.check()  # nothing new since: the failing file is tried once more, nothing else
    assert calls.get("stat", 0) <= 1 and calls.get("download", 0) <= 1, calls
    monkeypatch.undo()
    reader.check()
    assert bad.name in reader.served()


def test_a_failed_signed_upload_is_not_served_half_through_the_feed(
    bucket: BucketProbe, tmp_path: Path, writer: Instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wheel of a wheel+.asc upload that failed (the undo could not claim its intent
    back) stays hidden under its intent: no feed entry makes another instance serve it."""
    import io

    from gcs_sync.errors import StorageError, StorageUnavailable
    from gcs_sync.sync.pending import PendingUploads

    reader = _started(Instance(bucket, tmp_path / "b"))
    wheel = make_wheel(tmp_path / "dist", "signed", "1.0")
    with wheel.open("rb") as stream:
        staged = writer.folder.stage(wheel.name, stream)
    record, metadata = compute_record(staged.path, wheel.name, sha256=staged.sha256, size=staged.size,
                                      upload_time=upload_time(time.time()), uploader=None)
    staged = dataclasses.replace(staged, record=record, metadata=metadata)
    signature = writer.folder.stage(wheel.name + ".asc", io.BytesIO(b"-----BEGIN PGP SIGNATURE-----\n"))
    real_upload = type(writer.driver).upload

    def upload(self: FileStoreDriver, name: str, *args: object, **kwargs: object) -> object:
        if name.endswith(".asc"):
            raise StorageUnavailable("upload", name, "503 Service Unavailable")
        return real_upload(self, name, *args, **kwargs)  # type: ignore[arg-type]

    def claim(self: PendingUploads, *args: object, **kwargs: object) -> object:
        raise StorageUnavailable("upload", "intent", "503 Service Unavailable")

    # No server fails one write and then the next on demand: the two calls are replaced.
    monkeypatch.setattr(type(writer.driver), "upload", upload)
    monkeypatch.setattr(PendingUploads, "claim", claim)
    with pytest.raises(StorageError):
        writer.client.publish([staged, signature], overwrite=False)
    monkeypatch.undo()
    assert bucket.get(wheel.name) is not None  # the wheel stayed, under its live intent
    reader.check()
    assert wheel.name not in reader.served()


def test_an_entry_naming_no_package_file_is_ignored(bucket: BucketProbe, tmp_path: Path, writer: Instance) -> None:
    """A feed entry is a hint from a writer; one naming a path (another tool's, or a hostile
    one) is never followed into the bucket or the folder."""
    reader = _started(Instance(bucket, tmp_path / "b"))
    bucket.put(f".gcs_sync/feed/{int(time.time() * 1000):013d}-000000000000.a.-..gcs_sync", b"{}")
    assert reader.check() == {"list": 1}


def test_a_command_line_writer_an_hour_behind_names_after_the_feeds_newest_entry(
    bucket: BucketProbe, tmp_path: Path, writer: Instance
) -> None:
    """`push`, `yank` and `users` have no position: their feed lists the newest entries
    once and names after them, so a laptop whose clock is an hour behind is still read."""
    reader = _started(Instance(bucket, tmp_path / "b"))
    writer.upload(make_wheel(tmp_path / "dist", "first", "1.0"))
    reader.check()
    wheel = make_wheel(tmp_path / "dist", "late", "1.0")
    bucket.put(wheel.name, wheel.read_bytes())  # the file as `push` stores it (its record follows at the check)
    ChangeFeed(writer.driver, wall_clock=lambda: time.time() - HOUR).announce(ChangeKind.ADDED, wheel.name)
    calls = reader.check()
    assert calls["list"] == 1, calls
    assert wheel.name in reader.served()


def test_a_snapshot_in_the_first_format_is_still_read(bucket: BucketProbe, tmp_path: Path, writer: Instance) -> None:
    """A bucket whose newest snapshot an older release wrote (one JSON document): a new
    instance starts from it as from a current one, without listing the bucket."""
    import gzip
    import json

    wheels = [make_wheel(tmp_path / "dist", f"p{i}", "1.0") for i in range(2)]
    for wheel in wheels:
        writer.upload(wheel)
    _started(writer)
    [current] = _snapshots(bucket)
    entries = writer.served()
    old = {"format": 1, "written_at": time.time(), "position": {"after": None, "window": []},
           "files": {name: {**entry.to_json(), "local_fingerprint": CATALOGUED} for name, entry in entries.items()}}
    position = PositionFile(writer.folder.control, writer.driver.url).load()
    assert position is not None
    old["position"] = position.to_json()
    writer.driver.delete(current)
    writer.driver.put_note(current, gzip.compress(json.dumps(old, separators=(",", ":")).encode()), create_only=True)

    for catalog in (True, False):
        cold = Instance(bucket, tmp_path / f"cold-{catalog}", catalog=catalog, fill=not catalog)
        cold.client.refresh_now()
        assert set(cold.served()) == {w.name for w in wheels}
        assert cold.driver.calls["list"] == 2, dict(cold.driver.calls)  # the snapshots and the feed
        assert all(entry.record is not None for entry in cold.served().values())
        assert cold.client.wait_for_fill(30)


def test_a_snapshot_in_the_second_format_is_still_read(bucket: BucketProbe, tmp_path: Path, writer: Instance) -> None:
    """A snapshot an older release wrote in format 2 (every entry an object, no rows): a new
    instance starts from it as from a current one, and gets every record as saved."""
    import gzip
    import json

    wheels = [make_wheel(tmp_path / "dist", f"p{i}", "1.0") for i in range(3)]
    for wheel in wheels:
        writer.upload(wheel)
    _started(writer)
    [current] = _snapshots(bucket)
    text = gzip.decompress(writer.driver.read_note(current) or b"").decode()
    head, rest = text.split("\n", 1)
    assert json.loads(head)["format"] == 3 and "[" in rest  # rows, as this release writes
    entries = writer.served()
    older = json.dumps({**json.loads(head), "format": 2}) + "\n" + "".join(
        ("," if n else "") + json.dumps(name) + ": " + json.dumps({**entry.to_json(), "local_fingerprint": CATALOGUED})
        + "\n" for n, (name, entry) in enumerate(sorted(entries.items())))
    writer.driver.delete(current)
    writer.driver.put_note(current, gzip.compress(older.encode()), create_only=True)

    cold = Instance(bucket, tmp_path / "cold", catalog=True)
    cold.client.refresh_now()
    assert cold.driver.calls["list"] == 2, dict(cold.driver.calls)  # the snapshots and the feed: no listing
    read = cold.served()
    assert {name: entry.record for name, entry in read.items()} == {name: entry.record for name, entry in entries.items()}
