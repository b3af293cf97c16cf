"""The file store driver contract (gcs_sync/drivers/base.py), written once as a class and
run on every driver against its real server: a local folder, gcp-storage-emulator,
moto's S3 server. A new driver subclasses ``DriverContract`` (or ``MetadataDriverContract``)
and provides its fixtures."""

from __future__ import annotations

import hashlib
import time
import re
import shutil
from pathlib import Path
from typing import Callable

import botocore.exceptions
import pytest
from google.api_core import exceptions as gexc

from gcs_sync.drivers import FileStoreDriver, gcs, make_driver, s3
from gcs_sync.drivers.local import LocalFolderDriver
from gcs_sync.drivers.base import BUCKET, CREATE, DELETE, READ, REPLACE, STREAM_CHUNK, Meaning
from gcs_sync.errors import (
    BucketNotFound,
    ObjectChanged,
    ObjectExists,
    ObjectNotFound,
    StorageError,
)
from testkit.buckets import BucketProbe

from .conftest import new_probe, settings_for


def _file(tmp_path: Path, data: bytes, name: str = "src") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


class DriverContract:
    """What every driver does. A subclass provides two fixtures: ``driver``, the driver
    under test on a new, empty bucket of its store, and ``bucket``, a ``BucketProbe``
    (testkit/buckets.py) that reads and writes that bucket behind the driver's back."""

    def test_empty_bucket_lists_nothing(self, driver: FileStoreDriver) -> None:
        assert driver.list_objects() == {}

    def test_create_only_upload_is_listed_with_its_version_and_size(
        self, driver: FileStoreDriver, bucket: BucketProbe, tmp_path: Path
    ) -> None:
        stored = driver.upload("demo-1.0.tar.gz", _file(tmp_path, b"abc"), create_only=True, metadata={"sha256": "x"})
        listed = driver.list_objects()
        assert list(listed) == ["demo-1.0.tar.gz"]
        assert listed["demo-1.0.tar.gz"].version == stored.version
        assert listed["demo-1.0.tar.gz"].size == 3
        assert bucket.get("demo-1.0.tar.gz") == b"abc"

    def test_create_only_upload_refuses_an_existing_name(
        self, driver: FileStoreDriver, bucket: BucketProbe, tmp_path: Path
    ) -> None:
        bucket.put("demo-1.0.tar.gz", b"first")
        with pytest.raises(ObjectExists) as caught:
            driver.upload("demo-1.0.tar.gz", _file(tmp_path, b"second"), create_only=True, metadata={})
        assert "demo-1.0.tar.gz" in str(caught.value)
        assert isinstance(caught.value, FileExistsError)
        assert bucket.get("demo-1.0.tar.gz") == b"first"

    def test_create_only_holds_for_large_files_too(
        self, driver: FileStoreDriver, bucket: BucketProbe, tmp_path: Path
    ) -> None:
        big = _file(tmp_path, b"z" * (9 << 20))  # over 8 MB: GCS switches to a resumable upload
        driver.upload("big-1.0.tar.gz", big, create_only=True, metadata={})
        with pytest.raises(ObjectExists):
            driver.upload("big-1.0.tar.gz", _file(tmp_path, b"small", "other"), create_only=True, metadata={})
        assert bucket.get("big-1.0.tar.gz") == big.read_bytes()

    def test_overwrite_replaces_content_and_changes_version(
        self, driver: FileStoreDriver, bucket: BucketProbe, tmp_path: Path
    ) -> None:
        first = driver.upload("demo-1.0.tar.gz", _file(tmp_path, b"one"), create_only=True, metadata={})
        second = driver.upload("demo-1.0.tar.gz", _file(tmp_path, b"two!"), create_only=False, metadata={})
        assert second.version != first.version
        assert driver.list_objects()["demo-1.0.tar.gz"].version == second.version
        assert bucket.get("demo-1.0.tar.gz") == b"two!"

    def test_download_writes_the_listed_bytes(
        self, driver: FileStoreDriver, bucket: BucketProbe, tmp_path: Path
    ) -> None:
        payload = bytes(range(256)) * 5000  # over 1 MB: more than one chunk
        bucket.put("demo-1.0.tar.gz", payload)
        version = driver.list_objects()["demo-1.0.tar.gz"].version
        target = tmp_path / "out"
        driver.download("demo-1.0.tar.gz", target, version)
        assert target.read_bytes() == payload

    # The object listed is gone, or its whole bucket is: a download at the listed version
    # raises a typed error naming the object (on GCS a missing bucket and a missing object
    # are one 404: any StorageError), and leaves no file behind.
    @pytest.mark.parametrize("gone, raised", [("object", ObjectNotFound), ("bucket", StorageError)])
    def test_a_download_of_what_is_gone_is_a_typed_error_naming_the_object(
        self, driver: FileStoreDriver, bucket: BucketProbe, tmp_path: Path, gone: str, raised: type[StorageError]
    ) -> None:
        bucket.put("demo-1.0.tar.gz", b"x")
        version = driver.list_objects()["demo-1.0.tar.gz"].version
        bucket.delete("demo-1.0.tar.gz")
        if gone == "bucket":
            bucket.remove_bucket()
            with pytest.raises(BucketNotFound):
                driver.list_objects()
            with pytest.raises(StorageError, match="demo-1.0.tar.gz"):
                driver.upload("demo-1.0.tar.gz", _file(tmp_path, b"x"), create_only=True, metadata={})
        with pytest.raises(raised, match="demo-1.0.tar.gz"):
            driver.download("demo-1.0.tar.gz", tmp_path / "out", version)
        assert not (tmp_path / "out").exists()

    def test_delete_removes_and_is_idempotent(self, driver: FileStoreDriver, bucket: BucketProbe) -> None:
        bucket.put("demo-1.0.tar.gz", b"x")
        driver.delete("demo-1.0.tar.gz")
        assert bucket.names() == set()
        driver.delete("demo-1.0.tar.gz")  # already gone: no error

    def test_listing_sees_only_objects_directly_under_the_prefix(
        self, driver: FileStoreDriver, bucket: BucketProbe
    ) -> None:
        bucket.put("demo-1.0.tar.gz", b"x")
        bucket.put("nested/other-1.0.tar.gz", b"y")
        assert set(driver.list_objects()) == {"demo-1.0.tar.gz"}

    def test_the_bucket_check_is_one_call_and_tells_a_missing_bucket(
        self, driver: FileStoreDriver, bucket: BucketProbe
    ) -> None:
        for i in range(3):
            bucket.put(f"demo-{i}.0.tar.gz", b"x")
        driver.check_bucket()
        assert dict(driver.calls) == {"check": 1}
        bucket.put("other-1.0.tar.gz", b"x")
        bucket.remove_bucket()
        with pytest.raises(BucketNotFound, match=re.escape(driver.url)):
            driver.check_bucket()

    def test_conditional_delete_keeps_a_replaced_object(
        self, driver: FileStoreDriver, bucket: BucketProbe, tmp_path: Path
    ) -> None:
        first = driver.upload("demo-1.0.tar.gz", _file(tmp_path, b"one"), create_only=True, metadata={})
        driver.upload("demo-1.0.tar.gz", _file(tmp_path, b"two"), create_only=False, metadata={})
        with pytest.raises(ObjectChanged):
            driver.delete("demo-1.0.tar.gz", if_version=first.version)
        assert bucket.get("demo-1.0.tar.gz") == b"two"
        current = driver.list_objects()["demo-1.0.tar.gz"].version
        driver.delete("demo-1.0.tar.gz", if_version=current)
        assert bucket.names() == set()

    def test_download_of_a_replaced_object_is_refused(
        self, driver: FileStoreDriver, bucket: BucketProbe, tmp_path: Path
    ) -> None:
        bucket.put("demo-1.0.tar.gz", b"one")
        version = driver.list_objects()["demo-1.0.tar.gz"].version
        bucket.put("demo-1.0.tar.gz", b"two, longer")
        with pytest.raises(ObjectChanged):
            driver.download("demo-1.0.tar.gz", tmp_path / "out", version)

    def test_calls_are_counted_per_operation(self, driver: FileStoreDriver, tmp_path: Path) -> None:
        driver.list_objects()
        driver.upload("demo-1.0.tar.gz", _file(tmp_path, b"x"), create_only=True, metadata={})
        driver.delete("demo-1.0.tar.gz")
        assert driver.calls["list"] == 1 and driver.calls["upload"] == 1 and driver.calls["delete"] == 1

    def test_download_returns_the_digest_of_the_bytes_whatever_the_metadata_claims(
        self, driver: FileStoreDriver, bucket: BucketProbe, tmp_path: Path
    ) -> None:
        """Another tool rewrote the object and kept our sha256 metadata (or the listing's is
        stale): what is served must carry the digest of the bytes, or pip's check fails."""
        claimed = "0" * 64
        if bucket.backend == "local":
            bucket.put("demo-1.0.tar.gz", b"payload")  # a folder keeps no metadata: the listing's claim only
        else:
            bucket.put("demo-1.0.tar.gz", b"payload", metadata={"sha256": claimed})
        listed = driver.list_objects()["demo-1.0.tar.gz"]
        digest = driver.download("demo-1.0.tar.gz", tmp_path / "out", listed.version, listed_sha256=claimed)
        assert (tmp_path / "out").read_bytes() == b"payload" and digest == hashlib.sha256(b"payload").hexdigest()

    def test_note_names_after_a_name_are_the_folders_own_sorted_and_strictly_after_it(
        self, driver: FileStoreDriver, bucket: BucketProbe, tmp_path: Path
    ) -> None:
        """What the change feed reads at every check: the entries after its position, in
        one listing call, and nothing from any other folder."""
        feed = ".gcs_sync/feed/"
        assert driver.list_note_names_after(feed, feed) == []  # no folder yet
        assert driver.list_note_names_after(feed, "") == []
        written = [f"{feed}{stamp}-{tag}.a.-.demo-1.0.tar.gz"
                   for stamp, tag in (("0000000000300", "c"), ("0000000000100", "a"), ("0000000000200", "b"))]
        for name in written:  # written out of name order: the answer is sorted all the same
            driver.put_note(name, b"{}", create_only=True)
        # Names that share the folder's prefix, sit beside or below it, or are packages.
        driver.put_note(".gcs_sync/feedback/0000000000400-d.a.-.x", b"{}", create_only=True)
        driver.put_note(".gcs_sync/records/0000000000500-e.a.-.x", b"{}", create_only=True)
        driver.put_note(f"{feed}sub/0000000000600-f.a.-.x", b"{}", create_only=True)
        bucket.put("0000000000700-g.tar.gz", b"a package file")
        in_order = sorted(written)
        driver.calls.clear()
        assert driver.list_note_names_after(feed, feed) == in_order
        assert dict(driver.calls) == {"list": 1}  # one request for a page of names
        assert driver.list_note_names_after(feed, "") == in_order
        assert driver.list_note_names_after(feed, in_order[0]) == in_order[1:]  # strictly after: not itself
        assert driver.list_note_names_after(feed, f"{feed}0000000000200") == in_order[1:]  # a position's name
        assert driver.list_note_names_after(feed, f"{feed}0000000000201") == in_order[2:]
        assert driver.list_note_names_after(feed, in_order[-1]) == []
        assert driver.list_note_names_after(".gcs_sync/empty/", "") == []  # an empty folder
        assert set(written) <= bucket.all_names()
        assert "demo-1.0.tar.gz" not in driver.list_objects()  # entries are never package files

    def test_download_returns_the_sha256_of_the_bytes(
        self, driver: FileStoreDriver, bucket: BucketProbe, tmp_path: Path
    ) -> None:
        bucket.put("other-1.0.tar.gz", b"stored by another tool")  # no sha256 metadata: hashed
        driver.upload("ours-1.0.tar.gz", _file(tmp_path, b"ours"), create_only=True,
                      metadata={"sha256": hashlib.sha256(b"ours").hexdigest()})
        for name, data in (("other-1.0.tar.gz", b"stored by another tool"), ("ours-1.0.tar.gz", b"ours")):
            listed = driver.list_objects()[name]
            assert driver.download(name, tmp_path / "out", listed.version) == hashlib.sha256(data).hexdigest()

    def test_stat_reads_one_object_as_the_listing_shows_it(self, driver: FileStoreDriver, bucket: BucketProbe) -> None:
        assert driver.stat("demo-1.0.tar.gz") is None
        bucket.put("demo-1.0.tar.gz", b"abc")
        bucket.put("nested/demo-1.0.tar.gz", b"other")
        driver.calls.clear()
        found = driver.stat("demo-1.0.tar.gz")
        assert dict(driver.calls) == {"stat": 1}  # one request, not a listing
        listed = driver.list_objects()["demo-1.0.tar.gz"]
        assert found is not None and (found.name, found.version, found.size) == (listed.name, listed.version, 3)
        bucket.put("demo-1.0.tar.gz", b"replaced")
        replaced = driver.stat("demo-1.0.tar.gz")
        assert replaced is not None and replaced.version != found.version and replaced.size == 8
        bucket.delete("demo-1.0.tar.gz")
        assert driver.stat("demo-1.0.tar.gz") is None

    def test_stat_carries_the_sha256_written_with_an_upload(self, driver: FileStoreDriver, tmp_path: Path) -> None:
        digest = hashlib.sha256(b"ours").hexdigest()
        stored = driver.upload("ours-1.0.tar.gz", _file(tmp_path, b"ours"), create_only=True,
                               metadata={"sha256": digest})
        found = driver.stat("ours-1.0.tar.gz")
        assert found is not None and found.version == stored.version
        # The local driver keeps no metadata; GCS and S3 return what the upload wrote.
        assert found.sha256 == (None if driver.url.startswith("file://") else digest)

    def test_a_conditional_upload_replaces_only_the_version_it_names(
        self, driver: FileStoreDriver, bucket: BucketProbe, tmp_path: Path
    ) -> None:
        first = driver.upload("htpasswd", _file(tmp_path, b"one"), create_only=True, metadata={})
        second = driver.upload("htpasswd", _file(tmp_path, b"two"), create_only=False, metadata={},
                               if_version=first.version)
        assert second.version != first.version and bucket.get("htpasswd") == b"two"
        with pytest.raises(ObjectChanged, match="htpasswd"):  # the version read before is gone
            driver.upload("htpasswd", _file(tmp_path, b"lost"), create_only=False, metadata={},
                          if_version=first.version)
        assert bucket.get("htpasswd") == b"two"
        bucket.delete("htpasswd")
        with pytest.raises(ObjectChanged, match="htpasswd"):  # deleted meanwhile: not created again
            driver.upload("htpasswd", _file(tmp_path, b"lost"), create_only=False, metadata={},
                          if_version=second.version)
        assert bucket.get("htpasswd") is None

    def test_a_conditional_note_write_or_delete_meets_a_replaced_note_as_changed_never_as_existing(
        self, driver: FileStoreDriver
    ) -> None:
        """A 412 on a conditional write or delete says "not at that version" (ObjectChanged),
        never "already exists" (ObjectExists: a create-only write's answer only)."""
        note = ".gcs_sync/pending/demo.json"
        first = driver.put_note(note, b'{"files": {}}')
        second = driver.put_note(note, b'{"files": {}, "claimed": 1}', if_version=first)
        assert second != first and driver.read_note(note) == b'{"files": {}, "claimed": 1}'
        with pytest.raises(ObjectChanged, match="demo.json") as caught:  # the version read before is gone
            driver.put_note(note, b"lost", if_version=first)
        assert not isinstance(caught.value, ObjectExists)
        with pytest.raises(ObjectChanged, match="demo.json") as caught:
            driver.delete(note, if_version=first)
        assert not isinstance(caught.value, ObjectExists)
        assert driver.read_note(note) == b'{"files": {}, "claimed": 1}'
        driver.delete(note, if_version=second)
        assert driver.read_note(note) is None and driver.list_notes(".gcs_sync/pending/") == []
        driver.delete(note, if_version=second)  # already gone: no error
        with pytest.raises(ObjectChanged, match="demo.json"):  # deleted meanwhile: not created again
            driver.put_note(note, b"lost", if_version=second)
        assert driver.read_note(note) is None


    def test_notes_are_read_and_listed_with_their_versions_and_written_create_only(
        self, driver: FileStoreDriver
    ) -> None:
        """What metadata records need: a create-only note write (ObjectExists if one is
        there), the version of the bytes read, and a listing with versions."""
        note = ".gcs_sync/records/demo-1.0.tar.gz"
        first = driver.put_note(note, b'{"a": 1}', create_only=True)
        with pytest.raises(ObjectExists, match="records/demo-1.0.tar.gz"):
            driver.put_note(note, b'{"a": 2}', create_only=True)
        assert driver.read_note_versioned(note) == (b'{"a": 1}', first)
        assert driver.list_note_versions(".gcs_sync/records/") == {note: first}
        second = driver.put_note(note, b'{"a": 3}', if_version=first)
        assert driver.read_note_versioned(note) == (b'{"a": 3}', second)
        assert driver.list_note_versions(".gcs_sync/records/") == {note: second}
        assert driver.read_note_versioned(".gcs_sync/records/missing-1.0.tar.gz") is None

    def test_listings_and_stat_say_when_an_object_was_written(
        self, driver: FileStoreDriver, tmp_path: Path
    ) -> None:
        before = time.time()
        driver.upload("demo-1.0.tar.gz", _file(tmp_path, b"abc"), create_only=True, metadata={})
        listed = driver.list_objects()["demo-1.0.tar.gz"].modified
        stated = driver.stat("demo-1.0.tar.gz")
        assert listed is not None and stated is not None and stated.modified is not None
        # The store's clock, at a second's precision on some stores.
        assert before - 5 < listed < time.time() + 5 and abs(stated.modified - listed) < 1

    # The cache's read (PACKAGE_FILES=cache): the bytes of one version in bounded chunks.
    # Sizes around the GCS driver's request range (4 MiB) and the chunk (1 MiB): empty,
    # less than a chunk, an exact number of ranges, and some more.
    @pytest.mark.parametrize("size", [0, 1000, 8 << 20, (9 << 20) + 7])
    def test_a_stream_gives_the_bytes_of_the_version_in_bounded_chunks(
        self, driver: FileStoreDriver, bucket: BucketProbe, size: int
    ) -> None:
        payload = hashlib.sha256(str(size).encode()).digest() * (size // 32) + b"x" * (size % 32)
        bucket.put("demo-1.0.tar.gz", payload)
        version = driver.list_objects()["demo-1.0.tar.gz"].version
        with driver.open_stream("demo-1.0.tar.gz", version) as chunks:
            received = list(chunks)
        assert b"".join(received) == payload
        assert all(0 < len(chunk) <= STREAM_CHUNK for chunk in received)

    def test_a_stream_of_what_is_gone_or_replaced_fails_before_the_first_chunk_naming_it(
        self, driver: FileStoreDriver, bucket: BucketProbe
    ) -> None:
        bucket.put("demo-1.0.tar.gz", b"one")
        version = driver.list_objects()["demo-1.0.tar.gz"].version
        bucket.put("demo-1.0.tar.gz", b"two, longer")
        with pytest.raises(ObjectChanged, match="demo-1.0.tar.gz"):
            with driver.open_stream("demo-1.0.tar.gz", version):
                pytest.fail("entered the stream of a replaced object")
        bucket.delete("demo-1.0.tar.gz")
        with pytest.raises(ObjectNotFound, match="demo-1.0.tar.gz"):
            with driver.open_stream("demo-1.0.tar.gz", version):
                pytest.fail("entered the stream of a deleted object")



class MetadataDriverContract(DriverContract):
    """The rest of the contract, for a store that keeps metadata with each object
    (``keeps_metadata``): the upload token and the sha256 a write leaves there. (The local
    driver has no replies to lose, and keeps no metadata to go stale.)"""

    def test_a_retried_create_only_write_recognises_its_own_earlier_attempt(
        self, driver: FileStoreDriver, bucket: BucketProbe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """What a retry after a lost reply sees: 412, with our own token on the object.
        (The local driver has no replies to lose.)"""
        monkeypatch.setattr(driver, "new_upload_token", lambda: "token-of-this-request")
        first = driver.upload("demo-1.0.tar.gz", _file(tmp_path, b"abc"), create_only=True, metadata={})
        again = driver.upload("demo-1.0.tar.gz", _file(tmp_path, b"abc"), create_only=True, metadata={})
        assert again.version == first.version
        monkeypatch.setattr(driver, "new_upload_token", lambda: "another-request")
        with pytest.raises(ObjectExists):
            driver.upload("demo-1.0.tar.gz", _file(tmp_path, b"abc"), create_only=True, metadata={})

    def test_stale_sha256_metadata_never_makes_other_bytes_an_identical_upload(
        self, driver: FileStoreDriver, bucket: BucketProbe, tmp_path: Path
    ) -> None:
        """Another tool replaced the object and kept our sha256 metadata: an upload of the
        bytes that metadata names must not be answered "already there, the same"."""
        ours = b"the bytes of the upload"
        bucket.put("demo-1.0.tar.gz", b"other bytes, another tool's",
                   metadata={"sha256": hashlib.sha256(ours).hexdigest()})
        with pytest.raises(ObjectExists):
            driver.upload("demo-1.0.tar.gz", _file(tmp_path, ours), create_only=True,
                          metadata={"sha256": hashlib.sha256(ours).hexdigest()})


class OnItsServer:
    """The fixtures for our own drivers: a new bucket on ``backend``'s real server (the
    session's, from conftest) and the driver ``make_driver`` gives for it."""

    backend: str

    @pytest.fixture
    def bucket(self, request: pytest.FixtureRequest, tmp_path: Path) -> BucketProbe:
        return new_probe(self.backend, request, tmp_path)

    @pytest.fixture
    def driver(self, bucket: BucketProbe, tmp_path: Path) -> FileStoreDriver:
        return make_driver(settings_for(bucket, tmp_path / "unused"))


class TestLocalDriver(OnItsServer, DriverContract):
    backend = "local"

    @pytest.mark.parametrize("prefix", ["packages", "", "a/b"])
    @pytest.mark.parametrize("step", ["_existing_folder", "_make_folders"])
    @pytest.mark.parametrize("write", ["upload", "note"])
    def test_a_bucket_folder_removed_while_a_write_runs_is_not_made_again(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write: str, step: str, prefix: str,
    ) -> None:
        """The folder's check and its write are several steps: the bucket folder removed
        in between (by hand, by a test moving it away) stays removed, and the write fails
        as one to a deleted bucket does in the cloud. It once came back empty
        (``mkdir(parents=True)``), and the next listing found an empty bucket. The removal
        is made right after one of the driver's own steps: no real timing puts it there
        reliably."""
        root = tmp_path / "bucket"
        (root / prefix).mkdir(parents=True)
        driver = LocalFolderDriver(root, prefix)
        real_step = getattr(driver, step)

        def step_then_lose_the_bucket(*args: object) -> object:
            done = real_step(*args)
            shutil.rmtree(root)
            return done

        monkeypatch.setattr(driver, step, step_then_lose_the_bucket)
        with pytest.raises(BucketNotFound, match="demo-1.0.tar.gz"):
            if write == "upload":
                driver.upload("demo-1.0.tar.gz", _file(tmp_path, b"x"), create_only=True, metadata={})
            else:
                driver.put_note(".gcs_sync/feed/demo-1.0.tar.gz", b"x", create_only=True)
        assert not root.exists()


class TestGCSDriver(OnItsServer, MetadataDriverContract):
    backend = "gcs"


class TestS3Driver(OnItsServer, MetadataDriverContract):
    backend = "s3"


# Each cloud driver's one error table, read as each kind of call means it: what a 412 and
# a 404 become. A 412 is ObjectExists only for a create-only write; on a conditional read,
# write or delete it is ObjectChanged.
_PRECONDITION_FAILED: dict[str, Callable[[], BaseException]] = {
    "gcs": lambda: gexc.PreconditionFailed("conditionNotMet"),
    "s3": lambda: botocore.exceptions.ClientError(
        {"Error": {"Code": "PreconditionFailed"}, "ResponseMetadata": {"HTTPStatusCode": 412}}, "GetObject"),
}
_NOT_FOUND: dict[str, Callable[[], BaseException]] = {
    "gcs": lambda: gexc.NotFound("No such object"),
    "s3": lambda: botocore.exceptions.ClientError(
        {"Error": {"Code": "NoSuchKey"}, "ResponseMetadata": {"HTTPStatusCode": 404}}, "GetObject"),
}
_MAPPED = {"gcs": gcs._mapped, "s3": s3._mapped}


@pytest.mark.parametrize("answer, meaning, raised", [
    (_PRECONDITION_FAILED, READ, ObjectChanged),
    (_PRECONDITION_FAILED, DELETE, ObjectChanged),
    (_PRECONDITION_FAILED, REPLACE, ObjectChanged),
    (_PRECONDITION_FAILED, CREATE, ObjectExists),
    (_NOT_FOUND, READ, ObjectNotFound),
    (_NOT_FOUND, DELETE, ObjectNotFound),
    (_NOT_FOUND, CREATE, BucketNotFound),
    (_NOT_FOUND, BUCKET, BucketNotFound),
], ids=["412-read", "412-delete", "412-replace", "412-create-only",
        "404-read", "404-delete", "404-create-only", "404-unconditional"])
@pytest.mark.parametrize("backend", ["gcs", "s3"])
def test_the_error_table_reads_a_412_and_a_404_as_the_call_means_them(
    backend: str, answer: dict[str, Callable[[], BaseException]], meaning: Meaning, raised: type[StorageError]
) -> None:
    sdk_error = answer[backend]()
    with pytest.raises(StorageError, match="demo-1.0.tar.gz") as caught:
        with _MAPPED[backend]("download", "demo-1.0.tar.gz", meaning):
            raise sdk_error
    assert type(caught.value) is raised and caught.value.__cause__ is sdk_error
