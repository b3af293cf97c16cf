"""StorageClient on every driver: each ContentChangeEvent's strategy, the safety rails,
and what a steady state costs in bucket calls."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Optional

import pytest

from gcs_sync.drivers import FileStoreDriver
from gcs_sync.errors import ObjectChanged, ObjectNotFound, StorageUnavailable
from gcs_sync.sync.client import StorageClient
from gcs_sync.sync.events import LocalDeleted, RemoteAdded
from gcs_sync.sync.folder import PackageFolder
from testkit.buckets import BucketProbe
from testkit.wait import eventually

from .views import age_view

A, B = "alpha-1.0.tar.gz", "beta-2.0-py3-none-any.whl"


@pytest.fixture
def folder(tmp_path: Path) -> PackageFolder:
    return PackageFolder(tmp_path / "packages")


@pytest.fixture
def client(driver: FileStoreDriver, folder: PackageFolder) -> StorageClient:
    # settle_seconds=0: the files these tests write count as complete at once
    # (tests/test_settle.py covers files still being written).
    return StorageClient(driver, folder, sync_interval=1, lock_timeout=5, push_local_changes=True, settle_seconds=0)


def visible_files(folder: PackageFolder) -> dict[str, bytes]:
    """Everything in the folder but its control folder: temps included, so leftovers show."""
    return {p.name: p.read_bytes() for p in folder.path.iterdir() if p.name != ".gcs_sync"}


def kinds(report) -> list[str]:
    return sorted(type(event).__name__ for event in report.applied)


def transfers(client: StorageClient):
    """What a sync applies its events with (the driver, the folder, the records keeper)."""
    return client._engine


def test_remote_added_is_downloaded(client: StorageClient, bucket: BucketProbe, folder: PackageFolder) -> None:
    bucket.put(A, b"alpha")
    bucket.put(B, b"beta")
    assert kinds(client.sync()) == ["RemoteAdded", "RemoteAdded"]
    assert visible_files(folder) == {A: b"alpha", B: b"beta"}


def test_remote_changed_replaces_the_local_copy(client, bucket, folder) -> None:
    bucket.put(A, b"old")
    client.sync()
    bucket.put(A, b"new content")
    assert kinds(client.sync()) == ["RemoteChanged"]
    assert visible_files(folder) == {A: b"new content"}


def test_remote_deleted_is_removed_locally(client, bucket, folder) -> None:
    bucket.put(A, b"alpha")
    bucket.put(B, b"beta")
    client.sync()
    bucket.delete(A)
    assert kinds(client.sync()) == ["RemoteDeleted"]
    assert visible_files(folder) == {B: b"beta"}


def test_local_added_is_uploaded(client, bucket, folder) -> None:
    (folder.path / A).write_bytes(b"made here")
    assert kinds(client.sync()) == ["LocalAdded"]
    assert bucket.get(A) == b"made here"


def test_local_deleted_after_a_sync_is_deleted_from_the_bucket_when_pushing(client, bucket, folder) -> None:
    bucket.put(A, b"alpha")
    bucket.put(B, b"beta")
    client.sync()
    (folder.path / A).unlink()
    assert kinds(client.sync()) == ["LocalDeleted"]
    assert bucket.names() == {B}


def test_local_deleted_is_restored_from_the_bucket_when_not_pushing(driver, bucket, folder) -> None:
    client = StorageClient(driver, folder, sync_interval=1, lock_timeout=5, push_local_changes=False)
    bucket.put(A, b"alpha")
    bucket.put(B, b"beta")
    client.sync()
    (folder.path / A).unlink()  # a /tmp cleaner, say
    assert kinds(client.sync()) == ["RemoteAdded"]
    assert bucket.names() == {A, B} and visible_files(folder) == {A: b"alpha", B: b"beta"}


def test_a_local_delete_never_removes_a_newer_upload(client, bucket, folder) -> None:
    bucket.put(A, b"alpha")
    client.sync()
    listed = client.driver.list_objects()[A]
    bucket.put(A, b"replaced meanwhile")  # between the listing and the delete
    with pytest.raises(ObjectChanged):
        LocalDeleted(A, listed.version).apply(transfers(client))
    assert bucket.get(A) == b"replaced meanwhile"


def test_a_new_empty_folder_pulls_everything_and_deletes_nothing(driver, bucket, tmp_path) -> None:
    bucket.put(A, b"alpha")
    bucket.put(B, b"beta")
    first = StorageClient(driver, PackageFolder(tmp_path / "one"), sync_interval=1, lock_timeout=5,
                          push_local_changes=True, settle_seconds=0)
    first.sync()
    first.state.save(first.state.load())  # compacted: the whole state in state.json
    # A second folder whose state survived but whose files did not (a wiped /tmp, say).
    wiped = PackageFolder(tmp_path / "two")
    (wiped.control / "state.json").write_bytes((first.folder.control / "state.json").read_bytes())
    report = StorageClient(driver, wiped, sync_interval=1, lock_timeout=5, push_local_changes=True,
                           settle_seconds=0).sync()
    assert kinds(report) == ["RemoteAdded", "RemoteAdded"]
    assert bucket.names() == {A, B}


def test_state_of_another_bucket_is_ignored(client, bucket, folder) -> None:
    (folder.path / A).write_bytes(b"local")
    (folder.control / "state.json").write_text(
        '{"format": 2, "store": "gs://elsewhere/packages/", "files": {"%s": '
        '{"remote_version": "1", "local_fingerprint": "x"}}}' % A
    )
    assert kinds(client.sync()) == ["LocalAdded"]  # not "deleted remotely, so delete here"
    assert bucket.get(A) == b"local"


# Bucket object names are untrusted input. Listed directly under the prefix but not plain
# package filenames: each is skipped and logged once. Every store takes these:
ODD_NAMES = [
    "README.txt", "notapackage", ".hidden-1.0.tar.gz", "back\\slash-1.0.tar.gz", "C:\\abs-1.0.tar.gz",
    "sp ace-1.0.tar.gz", "semi;colon-1.0.tar.gz", "%2e%2e%2fdotdot-1.0.tar.gz", "tab\t-1.0.tar.gz",
    "cr\r-1.0.tar.gz", "del\x7f-1.0.tar.gz",
]
# ...and these only where the store allows them: a folder can't hold "/", NUL, "." or "..",
# or a name over 255 bytes; the GCS emulator refuses ".." (as GCS does); moto refuses a
# newline. "demo-1.0.tar.gz\n" passes pypiserver's own filename check (its "$" matches
# before a final newline).
ODD_NAMES_BY_STORE = {
    "local": ["demo-1.0.tar.gz\n", "new\nline-1.0.tar.gz"],
    "gcs": ["demo-1.0.tar.gz\n", "new\nline-1.0.tar.gz", "nul\x00-1.0.tar.gz", ".", "x" * 300 + "-1.0.tar.gz"],
    "s3": ["nul\x00-1.0.tar.gz", ".", "..", "x" * 300 + "-1.0.tar.gz"],
}
# In sub-folders (absolute-path-like names among them) and folder placeholders: never
# listed at all, as the prefix's own placeholder ("packages/") is not.
UNLISTED_NAMES_BY_STORE = {
    "local": ["sub/nested-1.0.tar.gz"],
    "gcs": ["sub/nested-1.0.tar.gz", "/abs-1.0.tar.gz", "//abs-2.0.tar.gz", "", "sub/"],
    "s3": ["sub/nested-1.0.tar.gz", "/abs-1.0.tar.gz", "../escape-1.0.tar.gz", "", "sub/"],
}


def _tree(root: Path) -> dict[Path, Optional[tuple[int, int]]]:
    """Every folder under root, and every file with its size and mtime, bookkeeping aside."""
    return {
        p: None if p.is_dir() and not p.is_symlink() else (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in root.rglob("*") if ".gcs_sync" not in p.parts
    }


def test_odd_object_names_are_skipped_and_logged(driver, bucket, tmp_path, caplog) -> None:
    odd = ODD_NAMES + ODD_NAMES_BY_STORE[bucket.backend]
    for name in odd + UNLISTED_NAMES_BY_STORE[bucket.backend]:
        bucket.put(name, b"odd")
    bucket.put(A, b"alpha")
    if bucket.backend == "local":  # a link out of the bucket folder is not followed
        (tmp_path / "secret").write_bytes(b"not for the index")
        (bucket.root / "packages" / "link-1.0.tar.gz").symlink_to(tmp_path / "secret")
    # Three levels down, so that a name that climbed out of the folder would land in tmp_path.
    folder = PackageFolder(tmp_path / "deep" / "er" / "packages")
    client = StorageClient(driver, folder, sync_interval=1, lock_timeout=5, push_local_changes=True, settle_seconds=0)
    before = _tree(tmp_path)
    with caplog.at_level(logging.WARNING, logger="gcs_sync"):
        report = client.sync()
        again = client.sync()
    assert sorted(report.skipped_names) == sorted(odd) == sorted(again.skipped_names)
    assert visible_files(folder) == {A: b"alpha"}
    after = _tree(tmp_path)
    # Nothing outside the folder was created or changed; in it, only A (and its bookkeeping).
    assert {p for p in after if after[p] != before.get(p)} == {folder.path / A}
    skipped = [r.getMessage() for r in caplog.records if "skipping bucket object" in r.getMessage()]
    for name in odd:
        assert sum(repr(name) in message for message in skipped) == 1, name  # once, not per sync
    assert not any(c in message for message in skipped for c in "\n\r\x00")  # no forged log lines


def test_a_download_that_fails_leaves_no_file_behind(client, bucket, folder) -> None:
    bucket.put(A, b"alpha")
    listed = client.driver.list_objects()[A]
    bucket.delete(A)  # gone between the listing and the download, as in a real race
    with pytest.raises(ObjectNotFound, match=A):
        RemoteAdded(A, listed).apply(transfers(client))
    assert visible_files(folder) == {}


def _age_view(client: StorageClient, seconds: float = 2) -> None:
    """Pretend the last check was ``seconds`` ago, i.e. the interval has passed."""
    age_view(client, seconds)


def test_an_unreachable_bucket_is_logged_and_the_local_copy_stays(client, bucket, folder, caplog) -> None:
    bucket.put(A, b"alpha")
    client.sync()
    assert client.wait_for_maintenance()
    bucket.remove_bucket()
    _age_view(client)
    with caplog.at_level(logging.ERROR, logger="gcs_sync"):
        client.refresh_now()  # must not raise: reads go on from the local copy
    assert f"sync from {client.driver.url} failed" in caplog.text
    assert visible_files(folder) == {A: b"alpha"}


def test_no_bucket_call_while_fresh_then_one_feed_listing_and_no_download(client, bucket, driver) -> None:
    bucket.put(A, b"alpha")
    client.refresh_now()
    assert client.wait_for_maintenance()  # the snapshot after that first (full) listing
    calls = dict(driver.calls)
    for _ in range(50):
        client.refresh_now()
    assert dict(driver.calls) == calls  # fresh: no bucket call at all
    for check in range(1, 4):
        _age_view(client)
        client.refresh_now()
        # One listing of the change feed from this instance's position, which has no new
        # entry: nothing listed, downloaded or uploaded (the record computed at first stays).
        assert dict(driver.calls) == {**calls, "list": calls["list"] + check}


class FailsOnce(FileStoreDriver):
    """The real driver, but the first download of one name fails. Neither emulator can
    fail a single download on demand (issue 4 brings a fault-injecting proxy)."""

    def __init__(self, real: FileStoreDriver, name: str) -> None:
        super().__init__()
        self.real, self.name, self.url, self.failed = real, name, real.url, False

    def check_bucket(self):
        return self.real.check_bucket()

    def list_objects(self):
        return self.real.list_objects()

    def stat(self, name):
        return self.real.stat(name)

    def download(self, name, destination, version, listed_sha256=None):
        if name == self.name and not self.failed:
            self.failed = True
            raise StorageUnavailable("download", name, "injected: connection reset")
        return self.real.download(name, destination, version, listed_sha256)

    def _write(self, name, source, *, create_only, if_version, metadata):
        return self.real._write(name, source, create_only=create_only, if_version=if_version, metadata=metadata)

    def look_once(self, name, sha256):
        return self.real.look_once(name, sha256)

    def delete(self, name, if_version=None):
        return self.real.delete(name, if_version=if_version)

    def put_note(self, name, data, if_version=None, create_only=False):
        return self.real.put_note(name, data, if_version=if_version, create_only=create_only)

    def read_note(self, name):
        return self.real.read_note(name)

    def read_note_versioned(self, name):
        return self.real.read_note_versioned(name)

    def list_notes(self, folder):
        return self.real.list_notes(folder)

    def list_note_versions(self, folder):
        return self.real.list_note_versions(folder)

    def list_notes_after(self, folder, start_after):
        return self.real.list_notes_after(folder, start_after)


def test_refilling_a_wiped_folder_never_deletes_from_the_bucket(driver, bucket, folder) -> None:
    bucket.put(A, b"alpha")
    bucket.put(B, b"beta")
    StorageClient(driver, folder, sync_interval=1, lock_timeout=5, push_local_changes=True, settle_seconds=0).sync()
    for name in (A, B):
        (folder.path / name).unlink()  # rm data/packages/*: the state survives
    flaky = StorageClient(FailsOnce(driver, B), folder, sync_interval=1, lock_timeout=5, push_local_changes=True,
                          settle_seconds=0)
    assert kinds(flaky.sync()) == ["RemoteAdded"]  # A back; B failed this time
    assert kinds(flaky.sync()) == ["RemoteAdded"]  # B back: not taken as deleted locally
    assert bucket.names() == {A, B} and visible_files(folder) == {A: b"alpha", B: b"beta"}


def test_a_sync_killed_midway_keeps_what_it_finished(client, bucket, folder) -> None:
    bucket.put(A, b"alpha")
    bucket.put(B, b"beta")
    listed = client.driver.list_objects()
    with client._lock:  # what a sync does for one event, then the worker dies
        entry = RemoteAdded(A, listed[A]).apply(transfers(client))
        client.state.record(A, entry)
    bucket.delete(A)  # removed through another instance before the next sync
    report = client.sync()
    assert kinds(report) == ["RemoteAdded", "RemoteDeleted"]  # not re-uploaded as LocalAdded
    assert bucket.names() == {B} and visible_files(folder) == {B: b"beta"}


def test_a_cold_start_downloads_in_parallel_and_records_each_digest_once(driver, bucket, folder) -> None:
    contents = {f"many{i}-1.0.tar.gz": f"file {i}".encode() * (i + 1) for i in range(40)}
    for name, data in contents.items():
        bucket.put(name, data)
    client = StorageClient(driver, folder, sync_interval=1, lock_timeout=5, concurrency=8)
    report = client.sync()
    assert len(report.applied) == 40 and not report.failed
    assert visible_files(folder) == contents
    assert {name: entry.sha256 for name, entry in client.state.load().items()} == {
        name: hashlib.sha256(data).hexdigest() for name, data in contents.items()
    }
    assert client.driver.calls["download"] == 40


def test_a_sync_with_a_failed_transfer_lists_again_at_the_next_check(driver, bucket, folder) -> None:
    for name, data in ((A, b"alpha"), (B, b"beta")):
        bucket.put(name, data)
    # SYNC_INTERVAL=0: every call checks, with no back-off after a failure.
    client = StorageClient(FailsOnce(driver, B), folder, sync_interval=0, lock_timeout=5, concurrency=4)
    client.refresh_now()
    assert visible_files(folder) == {A: b"alpha"}
    client.refresh_now()  # no feed entry names B, but the last listing was incomplete
    assert visible_files(folder) == {A: b"alpha", B: b"beta"}
    assert client.wait_for_maintenance()  # the snapshot after that complete listing
    lists = driver.calls["list"]
    client.refresh_now()  # complete now: one listing of the feed is enough
    assert driver.calls["list"] == lists + 1


class BreaksOn(FailsOnce):
    """The real driver, but one download hits a bug (KeyError): no server can be made to
    raise an exception our driver does not translate, so this is a stand-in."""

    def download(self, name, destination, version, listed_sha256=None):
        if name == self.name:
            raise KeyError("a bug in the transfer code")
        return self.real.download(name, destination, version, listed_sha256)


def test_an_unexpected_error_in_one_transfer_keeps_the_others(driver, bucket, folder, caplog) -> None:
    names = [f"many{i}-1.0.tar.gz" for i in range(12)]
    for name in names:
        bucket.put(name, name.encode())
    client = StorageClient(BreaksOn(driver, names[5]), folder, sync_interval=1, lock_timeout=5, concurrency=4)
    with caplog.at_level(logging.ERROR, logger="gcs_sync"):
        client.refresh_now()  # never raises
    assert set(visible_files(folder)) == set(names) - {names[5]}
    assert set(client.state.load()) == set(names) - {names[5]}
    assert "KeyError" in caplog.text and names[5] in caplog.text


@pytest.mark.parametrize("bucket", ["gcs"], indirect=True)
def test_a_stopping_worker_skips_the_transfers_not_yet_begun(bucket, gcs_emulator, folder, monkeypatch) -> None:
    """A worker asked to exit during a long cold start stops promptly, and what it did
    download is recorded. A proxy adds 100 ms to every request, as a distant bucket."""
    from gcs_sync.drivers.gcs import GCSDriver
    from testkit.fault_proxy import FaultProxy

    names = [f"slow{i}-1.0.tar.gz" for i in range(60)]
    for name in names:
        bucket.put(name, name.encode())
    host, port = gcs_emulator.removeprefix("http://").split(":")
    with FaultProxy(host, int(port)) as proxy:
        proxy.latency = 0.1
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        driver = GCSDriver(bucket.name, "packages", timeout=10)
        client = StorageClient(driver, folder, sync_interval=1, lock_timeout=5, concurrency=2)
        warm_up = client.start_warm_up()
        eventually(lambda: driver.calls["download"] >= 4, 30)
        client.stop()
        warm_up.join(timeout=30)
        assert not warm_up.is_alive()
    downloaded = set(visible_files(folder))
    assert 4 <= len(downloaded) < len(names) and driver.calls["download"] < len(names)
    assert set(client.state.load()) == downloaded
