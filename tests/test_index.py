"""Each worker's in-memory index: it follows the folder's synced state (its own changes
and its siblings'), lists only files that are in place, and carries their digests."""

from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path

import pytest

from gcs_sync.sync.client import StorageClient
from gcs_sync.sync.folder import PackageFolder
from gcs_sync.sync.state import StateFile
from gcs_sync.web.index import PackageIndex
from testkit.buckets import BucketProbe

pytestmark = pytest.mark.parametrize("bucket", ["local"], indirect=True)  # the index never calls the bucket


@pytest.fixture
def folder(tmp_path: Path) -> PackageFolder:
    return PackageFolder(tmp_path / "packages")


@pytest.fixture
def client(driver, folder: PackageFolder) -> StorageClient:
    return StorageClient(driver, folder, sync_interval=1, lock_timeout=5)


def new_index(client: StorageClient, hash_algo: str | None = "sha256") -> PackageIndex:
    """Another worker's index over the same folder."""
    return PackageIndex(client.folder, StateFile(client.folder.control, client.driver.url), hash_algo)


def listed(index: PackageIndex) -> dict[str, str | None]:
    index.refresh()
    return {pkg.relfn: pkg.digest for pkg in index.all_packages()}


def sha(data: bytes) -> str:
    return "sha256=" + hashlib.sha256(data).hexdigest()


def test_every_worker_sees_a_sync_an_upload_and_a_removal_made_by_any_of_them(
    client: StorageClient, bucket: BucketProbe, folder: PackageFolder
) -> None:
    bucket.put("one-1.0.tar.gz", b"one")
    first, second = new_index(client), new_index(client)
    assert listed(first) == {}
    client.sync()
    assert listed(first) == listed(second) == {"one-1.0.tar.gz": sha(b"one")}
    client.publish([folder.stage("two-1.0.tar.gz", io.BytesIO(b"two"))], overwrite=False)
    assert listed(first) == listed(second) == {"one-1.0.tar.gz": sha(b"one"), "two-1.0.tar.gz": sha(b"two")}
    client.retract(["one-1.0.tar.gz"])
    assert listed(first) == listed(second) == {"two-1.0.tar.gz": sha(b"two")}
    assert [p.relfn for p in second.project_packages("two")] == ["two-1.0.tar.gz"]
    assert second.projects() == ["two"]


def test_only_recorded_files_in_place_are_listed(client: StorageClient, bucket: BucketProbe, folder: PackageFolder) -> None:
    bucket.put("kept-1.0.tar.gz", b"kept")
    bucket.put("edited-1.0.tar.gz", b"edited")
    client.sync()
    (folder.path / "dropped-1.0.tar.gz").write_bytes(b"copied in by hand")  # not in the bucket
    (folder.path / ".kept-1.0.tar.gz.0123.part").write_bytes(b"half")  # a transfer under way
    (folder.path / "edited-1.0.tar.gz").write_bytes(b"changed by hand")  # no longer what was recorded
    assert listed(new_index(client)) == {"kept-1.0.tar.gz": sha(b"kept")}


def test_names_are_grouped_by_normalized_project(client: StorageClient, bucket: BucketProbe) -> None:
    for name in ("Foo_Bar-1.0.tar.gz", "foo.bar-2.0.tar.gz", "foo_bar-3.0-py3-none-any.whl", "other-1.0.tar.gz"):
        bucket.put(name, name.encode())
    client.sync()
    index = new_index(client)
    index.refresh()
    assert sorted(p.relfn for p in index.project_packages("foo-bar")) == [
        "Foo_Bar-1.0.tar.gz", "foo.bar-2.0.tar.gz", "foo_bar-3.0-py3-none-any.whl"]
    assert sorted(index.projects()) == ["foo-bar", "other"] and len(index) == 4


def test_a_requested_file_is_found_alone_and_a_missing_one_walks_nothing(
        client: StorageClient, bucket: BucketProbe, monkeypatch: pytest.MonkeyPatch) -> None:
    """pypiserver's download route looks for its file among all_packages(): given that
    name, only that file is built and handed out, and a name not listed costs no walk."""
    for n in range(5):
        bucket.put(f"p{n}-1.0.tar.gz", b"x")
    client.sync()
    index = new_index(client)
    index.refresh()
    assert sorted(p.relfn for p in index.all_packages()) == [f"p{n}-1.0.tar.gz" for n in range(5)]
    built: list[str] = []
    real = index._package
    monkeypatch.setattr(index, "_package", lambda name, entry: built.append(name) or real(name, entry))
    assert [p.relfn for p in index.all_packages(first="p3-1.0.tar.gz")] == ["p3-1.0.tar.gz"]
    assert list(index.all_packages(first="p9-1.0.tar.gz")) == []
    assert built == ["p3-1.0.tar.gz"]


def test_with_another_hash_algorithm_the_digest_is_left_to_the_backend(client: StorageClient, bucket: BucketProbe) -> None:
    bucket.put("md-1.0.tar.gz", b"md")
    client.sync()
    assert listed(new_index(client, "md5")) == {"md-1.0.tar.gz": None}
    assert listed(new_index(client, None)) == {"md-1.0.tar.gz": None}


def test_files_carry_their_record_and_the_metadata_file_is_offered_once_in_place(
    client: StorageClient, bucket: BucketProbe, folder: PackageFolder
) -> None:
    from gcs_sync.records.record import FileRecord

    bucket.put("demo-1.0-py3-none-any.whl", b"wheel")
    bucket.put("demo-2.0.tar.gz", b"sdist")
    client.sync()
    state = StateFile(folder.control, client.driver.url)
    entry = state.load()["demo-1.0-py3-none-any.whl"]
    record = FileRecord("demo-1.0-py3-none-any.whl", 5, hashlib.sha256(b"wheel").hexdigest(),
                        "2026-12-04T10:00:00Z", metadata_sha256="ab" * 32)
    state.record("demo-1.0-py3-none-any.whl", entry.with_record(record, "1"))
    # A file whose record is not known yet.
    state.record("demo-2.0.tar.gz", state.load()["demo-2.0.tar.gz"].with_record(None, None))
    index = new_index(client)
    index.refresh()
    wheel, sdist = index.get("demo-1.0-py3-none-any.whl"), index.get("demo-2.0.tar.gz")
    assert wheel is not None and wheel.record == record and wheel.size == 5
    assert sdist is not None and sdist.record is None and sdist.size == 5  # from the recorded fingerprint
    assert sdist.sha256 == hashlib.sha256(b"sdist").hexdigest()
    assert index.metadata_file("demo-1.0-py3-none-any.whl.metadata") is None  # not in place yet
    folder.write_metadata("demo-1.0-py3-none-any.whl", b"Metadata-Version: 2.1\n")
    served = index.metadata_file("demo-1.0-py3-none-any.whl.metadata")
    assert served is not None and Path(served.root, served.relfn).read_bytes() == b"Metadata-Version: 2.1\n"
    assert served.relfn == "demo-1.0-py3-none-any.whl.metadata"
    assert index.metadata_file("demo-2.0.tar.gz.metadata") is None  # no record
    folder.remove_metadata("demo-1.0-py3-none-any.whl")
    assert index.metadata_file("demo-1.0-py3-none-any.whl.metadata") is None  # gone again
    folder.write_metadata("demo-1.0-py3-none-any.whl", b"Metadata-Version: 2.1\n")
    # A record of other bytes (an earlier file of that name) is not this file's.
    state.record("demo-1.0-py3-none-any.whl", entry.with_record(
        dataclasses.replace(record, sha256="00" * 32), "2"))
    index.refresh()
    stale = index.get("demo-1.0-py3-none-any.whl")
    assert stale is not None and stale.record is None
    assert index.metadata_file("demo-1.0-py3-none-any.whl.metadata") is None


def test_a_projects_files_are_built_once_and_again_only_when_that_project_changes(
        client: StorageClient, bucket: BucketProbe, folder: PackageFolder) -> None:
    """The object a project page is answered from (and its rendered page keyed on, in
    page_cache.py) stays the same until a file of that project changes, and only then."""
    bucket.put("one-1.0.tar.gz", b"one")
    bucket.put("two-1.0.tar.gz", b"two")
    client.sync()
    index = new_index(client)
    index.refresh()
    one, two = index.project_packages("one"), index.project_packages("two")
    assert index.project_packages("One") is one and index.get("one-1.0.tar.gz") is one[0]
    client.publish([folder.stage("two-2.0.tar.gz", io.BytesIO(b"two again"))], overwrite=False)
    index.refresh()
    assert index.project_packages("one") is one
    assert [p.relfn for p in index.project_packages("two")] == ["two-1.0.tar.gz", "two-2.0.tar.gz"]
    client.retract(["two-1.0.tar.gz", "two-2.0.tar.gz"])
    index.refresh()
    assert index.project_packages("two") == () and index.projects() == ["one"] and len(index) == 1
    assert index.get("two-1.0.tar.gz") is None and index.project_packages("one") is one


def test_the_files_kept_built_are_bounded_and_a_dropped_project_is_built_again(
        client: StorageClient, bucket: BucketProbe, monkeypatch: pytest.MonkeyPatch) -> None:
    import gcs_sync.web.index as index_module

    monkeypatch.setattr(index_module, "PROJECT_CACHE_FILES", 4)
    for project in ("a", "b", "c"):
        for n in range(2):
            bucket.put(f"{project}-1.{n}.tar.gz", project.encode() + bytes([n]))
    client.sync()
    index = new_index(client)
    index.refresh()
    first_a = index.project_packages("a")
    first_b = index.project_packages("b")
    assert index.project_packages("a") is first_a  # asked again: now the most recent
    first_c = index.project_packages("c")  # six files over a bound of four: b, the least recent, goes
    assert index.project_packages("a") is first_a and index.project_packages("c") is first_c
    again = index.project_packages("b")  # built again; a is now the least recent and goes
    assert again is not first_b and [p.relfn for p in again] == [p.relfn for p in first_b]
    assert index.project_packages("c") is first_c
    assert index.project_packages("a") is not first_a
    assert sorted(p.relfn for p in index.all_packages()) == sorted(
        f"{project}-1.{n}.tar.gz" for project in "abc" for n in range(2))


def test_a_project_larger_than_the_bound_stays_built_beside_others(
        client: StorageClient, bucket: BucketProbe, monkeypatch: pytest.MonkeyPatch) -> None:
    """Else it would be built again at nearly every request for it (a project of 30,000
    nightly wheels against a bound of 20,000)."""
    import gcs_sync.web.index as index_module

    monkeypatch.setattr(index_module, "PROJECT_CACHE_FILES", 4)
    for n in range(6):
        bucket.put(f"big-1.{n}.tar.gz", b"big %d" % n)
    bucket.put("small-1.0.tar.gz", b"small")
    client.sync()
    index = new_index(client)
    index.refresh()
    big = index.project_packages("big")
    assert len(big) == 6 and len(index.project_packages("small")) == 1
    assert index.project_packages("big") is big and index.get("big-1.3.tar.gz") is big[3]


def test_with_another_hash_algorithm_every_project_stays_built_so_each_digest_is_computed_once(
        client: StorageClient, bucket: BucketProbe, monkeypatch: pytest.MonkeyPatch) -> None:
    import gcs_sync.web.index as index_module

    monkeypatch.setattr(index_module, "PROJECT_CACHE_FILES", 1)
    for project in ("a", "b", "c"):
        bucket.put(f"{project}-1.0.tar.gz", project.encode())
    client.sync()
    index = new_index(client, "md5")
    index.refresh()
    walked = {p.relfn: p for p in index.all_packages()}
    assert {name: p for name, p in ((p.relfn, p) for p in index.all_packages())} == walked
    assert all(walked[p.relfn] is p for p in index.all_packages())  # the same objects: digests kept on them
    assert index.project_packages("a")[0] is walked["a-1.0.tar.gz"] and index.get("c-1.0.tar.gz") is walked[
        "c-1.0.tar.gz"]


def test_the_count_of_files_kept_built_follows_builds_drops_and_changes(
        client: StorageClient, bucket: BucketProbe, folder: PackageFolder, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the bound is checked against (files kept, the largest project kept) stays the
    sum and the maximum of what is kept, through evictions and changes, at O(1) a drop."""
    import gcs_sync.web.index as index_module

    monkeypatch.setattr(index_module, "PROJECT_CACHE_FILES", 5)
    sizes = {"a": 1, "b": 1, "c": 2, "d": 3, "e": 1}
    for project, count in sizes.items():
        for n in range(count):
            bucket.put(f"{project}-1.{n}.tar.gz", f"{project}{n}".encode())
    client.sync()
    index = new_index(client)
    index.refresh()

    def check() -> None:
        kept = [len(p.packages) for p in index._listing.built.values()]
        assert index._built_files == sum(kept) and index._largest_built == max(kept, default=0)
        assert sum(kept) <= max(5, 2 * max(kept, default=0))

    for project in "abcdeabdcedcba":
        assert len(index.project_packages(project)) == sizes[project]
        check()
    client.publish([folder.stage("d-2.0.tar.gz", io.BytesIO(b"d again"))], overwrite=False)
    client.retract(["c-1.0.tar.gz"])
    index.refresh()
    check()
    assert len(index.project_packages("d")) == 4 and len(index.project_packages("c")) == 1
    check()
