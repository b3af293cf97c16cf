"""Metadata records (issue 11): computed once at upload, stored beside the file as part of
the same all-or-nothing upload, and brought to every instance by its sync; files put in
the bucket by other tools get theirs from the first instance that meets them."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import pytest

from gcs_sync.records.record import FileRecord, metadata_object, record_object
from gcs_sync.sync.feed import ChangeFeed, ChangeKind
from testkit.buckets import BucketProbe
from testkit.fault_proxy import FaultProxy, Respond
from testkit.packages import make_wheel
from testkit.servers import USER
from testkit.wait import eventually

from .test_app import AUTH, App


def stored_record(bucket: BucketProbe, filename: str) -> FileRecord:
    data = bucket.get(record_object(filename))
    assert data is not None, f"no record of {filename} in the bucket"
    return FileRecord.from_bytes(data)


def indexed_record(app: App, filename: str) -> FileRecord | None:
    index = app.wsgi.config["gcs_sync.index"]
    index.refresh()
    pkg = index.get(filename)
    assert pkg is not None, f"{filename} is not indexed"
    entry = app.client.state.load()[filename]
    return entry.record


@pytest.fixture
def app(bucket: BucketProbe, tmp_path: Path, htpasswd: Path) -> App:
    return App(bucket, tmp_path / "packages", htpasswd)


def test_an_upload_stores_the_files_record_and_core_metadata_beside_it(
    app: App, bucket: BucketProbe, tmp_path: Path
) -> None:
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0", requires_python=">=3.8", requires=("other>=1",))
    assert app.upload(wheel).status_code == 200
    record = stored_record(bucket, wheel.name)
    metadata = bucket.get(metadata_object(wheel.name))
    assert metadata is not None and b"Requires-Dist: other>=1" in metadata
    assert record.filename == wheel.name and record.size == wheel.stat().st_size
    assert record.sha256 == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert record.uploader == USER and record.requires_python == ">=3.8"
    assert record.metadata_sha256 == hashlib.sha256(metadata).hexdigest()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", record.upload_time)
    assert not record.yanked
    assert indexed_record(app, wheel.name) == record
    assert (app.folder / ".gcs_sync" / "metadata" / f"{wheel.name}.metadata").read_bytes() == metadata


def test_a_wheel_whose_name_and_metadata_disagree_is_refused_and_nothing_is_stored(
    app: App, bucket: BucketProbe, tmp_path: Path
) -> None:
    wheel = make_wheel(tmp_path / "dist", "demo", "2.0", metadata_version="1.0")
    reply = app.upload(wheel)
    assert reply.status_code == 400
    assert "2.0" in reply.get_data(as_text=True) and "1.0" in reply.get_data(as_text=True)
    assert bucket.names() == set() and bucket.record_names() == set()
    assert app.leftovers() == [] and not (app.folder / wheel.name).exists()


@pytest.mark.parametrize("data, problem", [
    (b"PK\x05\x06" + b"\0" * 18, "metadata"),  # an empty zip: not a wheel
    (b"not a zip at all", "zip"),
])
def test_a_file_that_is_not_a_wheel_is_refused_with_a_400(
    app: App, bucket: BucketProbe, tmp_path: Path, data: bytes, problem: str
) -> None:
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    reply = app.upload(wheel, data=data)
    assert reply.status_code == 400 and wheel.name in reply.get_data(as_text=True)
    assert problem in reply.get_data(as_text=True).lower()
    assert bucket.names() == set() and bucket.record_names() == set()


def test_another_instance_serves_the_record_written_through_the_first(
    app: App, bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    other = App(bucket, tmp_path / "other", htpasswd)
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0", requires_python=">=3.9")
    assert app.upload(wheel).status_code == 200
    other.client.sync()
    assert indexed_record(other, wheel.name) == stored_record(bucket, wheel.name)
    assert (other.folder / ".gcs_sync" / "metadata" / f"{wheel.name}.metadata").read_bytes() == \
        bucket.get(metadata_object(wheel.name))


def test_a_file_put_there_by_another_tool_gets_its_record_once(
    bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0", requires_python=">=3.7")
    bucket.put(wheel.name, wheel.read_bytes())
    first = App(bucket, tmp_path / "first", htpasswd)
    first.client.sync()
    record = stored_record(bucket, wheel.name)
    assert record.uploader is None and record.requires_python == ">=3.7"
    assert record.sha256 == hashlib.sha256(wheel.read_bytes()).hexdigest()
    second = App(bucket, tmp_path / "second", htpasswd)
    second.driver.calls.clear()
    second.client.sync()
    assert second.driver.calls["upload"] == 0  # the record is read, not computed
    assert indexed_record(second, wheel.name) == record


def test_a_bad_file_put_there_by_another_tool_is_served_with_a_record_saying_why(
    app: App, bucket: BucketProbe, caplog: pytest.LogCaptureFixture
) -> None:
    bucket.put("demo-1.0-py3-none-any.whl", b"not a zip")
    with caplog.at_level(logging.WARNING, logger="gcs_sync.records"):
        app.client.sync()
    record = stored_record(bucket, "demo-1.0-py3-none-any.whl")
    assert record.metadata_sha256 is None and record.metadata_problem is not None
    assert "demo-1.0-py3-none-any.whl" in caplog.text
    assert app.http.get("/packages/demo-1.0-py3-none-any.whl").get_data() == b"not a zip"


def test_a_removal_removes_the_record_too(app: App, bucket: BucketProbe, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    assert app.upload(wheel).status_code == 200
    reply = app.http.post("/", data={":action": "remove_pkg", "name": "demo", "version": "1.0"}, headers=AUTH)
    assert reply.status_code == 200
    assert bucket.names() == set() and bucket.record_names() == set()
    assert not (app.folder / ".gcs_sync" / "metadata" / f"{wheel.name}.metadata").exists()


def test_a_stale_record_left_under_a_name_is_replaced_by_the_next_upload(
    app: App, bucket: BucketProbe, tmp_path: Path
) -> None:
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0", requires_python=">=3.10")
    stale = FileRecord(wheel.name, 3, "0" * 64, "2020-01-01T00:00:00.000000Z", yanked=True, yank_reason="old")
    bucket.put(record_object(wheel.name), stale.to_bytes())
    assert app.upload(wheel).status_code == 200
    record = stored_record(bucket, wheel.name)
    assert record.sha256 == hashlib.sha256(wheel.read_bytes()).hexdigest() and not record.yanked


def test_an_identical_retry_keeps_the_first_uploads_record(app: App, bucket: BucketProbe, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    assert app.upload(wheel).status_code == 200
    first = bucket.get(record_object(wheel.name))
    assert app.upload(wheel).status_code == 200  # the same bytes again: a success (PyPI too)
    assert bucket.get(record_object(wheel.name)) == first


# S3 only: GCS names the object in the body of its uploads, so the proxy cannot pick the
# record's write out from the file's.
@pytest.mark.parametrize("bucket", ["s3"], indirect=True)
def test_an_upload_whose_record_cannot_be_stored_fails_and_leaves_nothing(
    bucket: BucketProbe, proxy: FaultProxy, tmp_path: Path, htpasswd: Path
) -> None:
    app = App(bucket, tmp_path / "packages", htpasswd, STORAGE_TIMEOUT=2)
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    # The record's write (GCS names the object in the query, S3 in the path) answers 503.
    proxy.add_rule(None, r"records", Respond(503))
    reply = app.upload(wheel)
    proxy.clear_rules()
    assert reply.status_code == 503
    assert bucket.names() == set()
    assert record_object(wheel.name) not in bucket.record_names()
    # A retry succeeds, with its record (once the write breaker lets writes try again).
    assert eventually(lambda: app.upload(wheel).status_code == 200, 10)
    assert stored_record(bucket, wheel.name).sha256 == hashlib.sha256(wheel.read_bytes()).hexdigest()


@pytest.mark.parametrize("bucket", ["s3"], indirect=True)  # as above: S3 names the object in the path
def test_an_instance_that_may_not_write_records_keeps_them_and_says_so(
    bucket: BucketProbe, proxy: FaultProxy, tmp_path: Path, htpasswd: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0", requires_python=">=3.8")
    bucket.put(wheel.name, wheel.read_bytes())
    app = App(bucket, tmp_path / "packages", htpasswd, STORAGE_TIMEOUT=2)
    proxy.add_rule("PUT", r"records|metadata", Respond(403))
    with caplog.at_level(logging.WARNING):
        app.client.sync()
    proxy.clear_rules()
    assert bucket.record_names() == set()
    record = indexed_record(app, wheel.name)
    assert record is not None and record.requires_python == ">=3.8"
    assert "may not write metadata records" in caplog.text


def test_a_yank_reaches_another_instance_through_the_feed_and_only_the_record_changes(
    app: App, bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    from gcs_sync.sync.records import RecordStore

    other = App(bucket, tmp_path / "other", htpasswd)
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    assert app.upload(wheel).status_code == 200
    other.client.sync()
    file_version = other.client.state.load()[wheel.name].remote_version
    RecordStore(app.driver).set_yank(wheel.name, True, "broken")
    ChangeFeed(app.driver).announce(ChangeKind.RECORD, wheel.name)  # what `yank` does after the record
    calls = dict(other.driver.calls)
    other.age_view()
    other.client.refresh_now()  # a check: it reads the feed, and the record its entry names
    record = indexed_record(other, wheel.name)
    assert record is not None and record.yanked and record.yank_reason == "broken"
    assert other.client.state.load()[wheel.name].remote_version == file_version  # the file was not fetched again
    assert other.driver.calls["list"] == calls["list"] + 1  # the feed only: no full listing


def test_a_wheel_with_the_longest_name_is_stored_with_a_record_and_served_without_a_metadata_file(
    app: App, bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    """255 characters is the longest package file name; ``<name>.metadata`` would be longer
    than any folder allows, so that wheel is served alone (its record says why)."""
    wheel = make_wheel(tmp_path / "dist", "a" * 234, "1.0")
    assert len(wheel.name) == 255
    assert app.upload(wheel).status_code == 200
    record = stored_record(bucket, wheel.name)
    assert record.metadata_sha256 is None and "too long" in (record.metadata_problem or "")
    other = App(bucket, tmp_path / "other", htpasswd)
    other.client.sync()
    assert indexed_record(other, wheel.name) == record
    assert other.http.get(f"/packages/{wheel.name}").get_data() == wheel.read_bytes()
    assert "data-core-metadata" not in other.http.get("/simple/" + "a" * 234 + "/").get_data(as_text=True)


# Races no storage server can time: each is staged by wrapping one method of this
# instance's record store (the writes themselves go to the real server).

def test_a_failed_record_write_never_removes_a_file_another_request_was_answered_200_for(
    app: App, bucket: BucketProbe, tmp_path: Path, htpasswd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gcs_sync.errors import StorageUnavailable

    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    second = App(bucket, tmp_path / "second", htpasswd)
    answers = []

    def failing_write(record: FileRecord, metadata: object, **conditions: object) -> None:
        answers.append(second.upload(wheel).status_code)  # the same bytes, through another instance
        raise StorageUnavailable("upload", record.filename, "timed out")

    monkeypatch.setattr(app.client._writes._records, "write", failing_write)
    assert app.upload(wheel).status_code == 503
    assert answers == [200]
    assert bucket.get(wheel.name) == wheel.read_bytes() and stored_record(bucket, wheel.name).uploader == USER


def test_an_identical_upload_racing_the_first_ones_record_keeps_that_record_and_gets_200(
    app: App, bucket: BucketProbe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    sha256 = hashlib.sha256(wheel.read_bytes()).hexdigest()
    app.driver.upload(wheel.name, wheel, create_only=True, metadata={"sha256": sha256})
    first = FileRecord(wheel.name, wheel.stat().st_size, sha256, "2026-01-01T00:00:00.000000Z", uploader="first")
    store = app.client._writes._records
    read = store.read

    def read_then_the_first_record_lands(name: str):  # type: ignore[no-untyped-def]
        found = read(name)
        if bucket.get(record_object(name)) is None:
            app.driver.put_note(record_object(name), first.to_bytes())
        return found

    monkeypatch.setattr(store, "read", read_then_the_first_record_lands)
    assert app.upload(wheel, user_agent="twine/7.0.0").status_code == 200
    assert stored_record(bucket, wheel.name) == first


def test_a_sync_that_finds_a_metadata_file_missing_stores_it_again_and_keeps_the_yank(
    app: App, bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    from gcs_sync.sync.records import RecordStore

    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    assert app.upload(wheel).status_code == 200
    RecordStore(app.driver).set_yank(wheel.name, True, "broken")
    metadata = bucket.get(metadata_object(wheel.name))
    bucket.delete(metadata_object(wheel.name))
    other = App(bucket, tmp_path / "other", htpasswd)
    other.client.sync()
    record = stored_record(bucket, wheel.name)
    assert record.yanked and record.yank_reason == "broken" and record.uploader == USER
    assert bucket.get(metadata_object(wheel.name)) == metadata
    assert indexed_record(other, wheel.name) == record


def test_a_refused_upload_of_other_bytes_leaves_the_stored_files_record_alone(
    app: App, bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    from gcs_sync.sync.records import RecordStore

    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    assert app.upload(wheel).status_code == 200
    RecordStore(app.driver).set_yank(wheel.name, True, "broken")
    before = bucket.get(record_object(wheel.name))
    other = App(bucket, tmp_path / "other", htpasswd)  # knows nothing locally
    rebuilt = make_wheel(tmp_path / "rebuilt", "demo", "1.0", value="other bytes")
    assert other.upload(rebuilt).status_code == 409
    assert bucket.get(record_object(wheel.name)) == before and bucket.get(wheel.name) == wheel.read_bytes()


def test_a_removal_keeps_a_record_written_since_by_a_new_upload_of_that_name(
    app: App, bucket: BucketProbe, tmp_path: Path
) -> None:
    from gcs_sync.sync.records import RecordStore

    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    assert app.upload(wheel).status_code == 200
    newer = FileRecord(wheel.name, 10, "b" * 64, "2026-01-01T00:00:00.000000Z", uploader="next")
    app.driver.put_note(record_object(wheel.name), newer.to_bytes())  # a new upload's, written before its file
    RecordStore(app.driver).forget(wheel.name, hashlib.sha256(wheel.read_bytes()).hexdigest())
    assert stored_record(bucket, wheel.name) == newer


def test_a_refused_upload_racing_the_winner_puts_the_winners_record_back(
    bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    """A and B upload other bytes under one name at once: B overwrites A's record, A's file
    wins, B gets 409 and must put A's record back. (The interleaving is staged by wrapping
    each instance's file write.)"""
    import threading

    a = App(bucket, tmp_path / "a", htpasswd)
    b = App(bucket, tmp_path / "b", htpasswd)
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    other = make_wheel(tmp_path / "other", "demo", "1.0", value="other").read_bytes()
    a_write, b_write = a.driver.upload, b.driver.upload
    answers: dict[str, object] = {}

    def a_upload(name, *args, **kwargs):  # type: ignore[no-untyped-def]
        def b_upload(b_name, *b_args, **b_kwargs):  # type: ignore[no-untyped-def]
            answers["a_stored"] = a_write(name, *args, **kwargs)  # A's file lands first
            return b_write(b_name, *b_args, **b_kwargs)  # B's create-only write: 409
        b.driver.upload = b_upload  # type: ignore[method-assign]
        thread = threading.Thread(target=lambda: answers.__setitem__("b", b.upload(wheel, data=other).status_code))
        thread.start()
        thread.join()
        return answers["a_stored"]

    a.driver.upload = a_upload  # type: ignore[method-assign]
    assert a.upload(wheel).status_code == 200 and answers["b"] == 409
    assert bucket.get(wheel.name) == wheel.read_bytes()
    record = stored_record(bucket, wheel.name)
    assert record.uploader == USER and record.sha256 == hashlib.sha256(wheel.read_bytes()).hexdigest()


def test_a_new_upload_replaces_a_record_left_behind_by_a_removed_file_of_the_same_bytes(
    app: App, bucket: BucketProbe, tmp_path: Path
) -> None:
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    sha256 = hashlib.sha256(wheel.read_bytes()).hexdigest()
    ghost = FileRecord(wheel.name, wheel.stat().st_size, sha256, "2020-01-01T00:00:00.000000Z", uploader="ghost",
                       yanked=True, yank_reason="old")
    app.driver.put_note(record_object(wheel.name), ghost.to_bytes())  # its file is gone
    assert app.upload(wheel).status_code == 200
    record = stored_record(bucket, wheel.name)
    assert record.uploader == USER and not record.yanked and record.upload_time != ghost.upload_time


def test_an_undone_yank_is_seen_by_an_instance_that_read_the_yank(
    app: App, bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    """On S3 a version is the bytes' MD5: unyanking gives the first record's version back."""
    from gcs_sync.sync.records import RecordStore

    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    assert app.upload(wheel).status_code == 200
    other = App(bucket, tmp_path / "other", htpasswd)
    other.client.sync()
    store = RecordStore(app.driver)
    store.set_yank(wheel.name, True, None)
    other.client.sync()
    assert indexed_record(other, wheel.name).yanked  # type: ignore[union-attr]
    store.set_yank(wheel.name, False, None)
    other.client.sync()
    assert not indexed_record(other, wheel.name).yanked  # type: ignore[union-attr]


def test_a_sync_replaces_an_unreadable_record(app: App, bucket: BucketProbe, tmp_path: Path, htpasswd: Path) -> None:
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0", requires_python=">=3.8")
    assert app.upload(wheel).status_code == 200
    app.driver.put_note(record_object(wheel.name), b"not json")
    other = App(bucket, tmp_path / "other", htpasswd)
    other.client.sync()
    record = stored_record(bucket, wheel.name)
    assert record.requires_python == ">=3.8" and indexed_record(other, wheel.name) == record


def test_with_overwrite_an_identical_upload_keeps_the_record_and_other_bytes_get_theirs(
    bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    from gcs_sync.sync.records import RecordStore

    app = App(bucket, tmp_path / "packages", htpasswd, OVERWRITE=True)
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    assert app.upload(wheel).status_code == 200
    RecordStore(app.driver).set_yank(wheel.name, True, "broken")
    yanked = bucket.get(record_object(wheel.name))
    assert app.upload(wheel).status_code == 200  # a twine retry
    assert bucket.get(record_object(wheel.name)) == yanked
    rebuilt = make_wheel(tmp_path / "rebuilt", "demo", "1.0", value="other bytes", requires_python=">=3.12")
    assert app.upload(rebuilt).status_code == 200
    record = stored_record(bucket, wheel.name)
    assert record.sha256 == hashlib.sha256(rebuilt.read_bytes()).hexdigest() and record.requires_python == ">=3.12"
