"""A mirror server's cold start (PACKAGE_FILES=mirror, ``fill_in_background``): ready from
the newest catalog snapshot and the change feed since, without one package file, like a
cache instance; its files follow in the background (the fill, ``sync/engine.py``), a
batch at a time under the folder's lock, and a file not here yet is served through the
cache meanwhile (``web/package_files.py``)."""

from __future__ import annotations

import gzip
import hashlib
import logging
import json
import re
import time
from pathlib import Path

import pytest

from gcs_sync.files import TEMP_SUFFIX
from gcs_sync.sync import engine, fill
from gcs_sync.sync.feed import ChangeKind
from gcs_sync.sync.state import CATALOGUED, StateFile
from testkit.buckets import BucketProbe
from testkit.fault_proxy import Delay, FaultProxy, Respond
from testkit.packages import make_wheel

from .conftest import announce
from .views import age_view
from .test_app import App
from .test_feed import Instance, _snapshots, _started


def _bucket_with_a_snapshot(bucket: BucketProbe, tmp_path: Path, files: int) -> list[Path]:
    """``files`` wheels uploaded by another instance, then its full listing: the bucket's
    first catalog snapshot names them all."""
    writer = Instance(bucket, tmp_path / "a")
    wheels = [make_wheel(tmp_path / "dist", f"p{i}", "1.0") for i in range(files)]
    for wheel in wheels:
        writer.upload(wheel)
    _started(writer)
    assert len(_snapshots(bucket)) == 1
    return wheels


def test_a_cold_mirror_is_ready_from_the_snapshot_then_fills_its_folder(
    bucket: BucketProbe, tmp_path: Path
) -> None:
    writer = Instance(bucket, tmp_path / "a")
    wheels = [make_wheel(tmp_path / "dist", f"p{i}", "1.0") for i in range(3)]
    for wheel in wheels[:2]:
        writer.upload(wheel)
    _started(writer)  # a complete full listing: the first snapshot of this bucket
    assert len(_snapshots(bucket)) == 1
    writer.upload(wheels[2])  # after the snapshot: only the feed has it

    mirror = Instance(bucket, tmp_path / "b", fill=True)
    mirror.client.refresh_now()
    # Ready: every file served (the index lists catalogued ones), after the snapshots'
    # listing and the feed's, never a listing of the bucket.
    assert set(mirror.served()) == {w.name for w in wheels}
    assert mirror.driver.calls["list"] == 2, dict(mirror.driver.calls)
    assert mirror.client.status()["status"] == "ok"

    assert mirror.client.wait_for_fill(60)
    for wheel in wheels:
        entry = mirror.served()[wheel.name]
        assert (mirror.folder.path / wheel.name).read_bytes() == wheel.read_bytes()
        assert entry.local_fingerprint == mirror.folder.fingerprint(wheel.name) != CATALOGUED
        assert entry.sha256 == hashlib.sha256(wheel.read_bytes()).hexdigest()
        assert entry.record is not None and entry.record.sha256 == entry.sha256
        assert entry.record.metadata_sha256 is not None
        assert hashlib.sha256(mirror.folder.metadata_path(wheel.name).read_bytes()).hexdigest() \
            == entry.record.metadata_sha256
    # Filled: a full listing now finds nothing to bring.
    downloads = mirror.driver.calls["download"]
    report = mirror.client.sync()
    assert report.applied == [] and mirror.driver.calls["download"] == downloads
    assert mirror.check() == {"list": 1}  # then the feed as usual


def test_a_full_listing_leaves_catalogued_files_to_the_fill(bucket: BucketProbe, tmp_path: Path) -> None:
    """Started from a snapshot, with the fill not run yet (the first check starts it): a
    full listing catalogues, and downloads nothing itself."""
    _bucket_with_a_snapshot(bucket, tmp_path, 2)
    mirror = Instance(bucket, tmp_path / "b", fill=True)
    assert mirror.client._engine._start_from_snapshot(engine.Moment.now()) is not None
    report = mirror.client.sync()
    assert report.applied == [] and report.failed == []
    assert all(entry.local_fingerprint == CATALOGUED for entry in mirror.served().values())
    assert [p.name for p in mirror.folder.path.iterdir() if not p.name.startswith(".")] == []


@pytest.mark.parametrize("bucket", ["s3", "gcs"], indirect=True)
def test_a_file_not_here_yet_is_served_through_the_cache_then_from_the_folder(
    bucket: BucketProbe, proxy: FaultProxy, tmp_path: Path, htpasswd: Path
) -> None:
    """The fill's download of the file is held back by the proxy for a few seconds; the
    client's request meanwhile is answered from the bucket (its own read, not held)."""
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    writer = App(bucket, tmp_path / "a", htpasswd, PACKAGE_FILES="mirror")
    assert writer.upload(wheel).status_code == 200
    writer.client.sync()
    assert writer.client.wait_for_maintenance() and len(_snapshots(bucket)) == 1

    object_read = r"(/|%2F)demo-1\.0-py3-none-any\.whl(\?|$)"
    proxy.add_rule("GET", object_read, Delay(4), times=1)
    mirror = App(bucket, tmp_path / "b", htpasswd, PACKAGE_FILES="mirror")
    assert mirror.checked_get("/simple/demo/").status_code == 200
    local = tmp_path / "b" / wheel.name
    assert not local.exists()  # the fill is still waiting for the bucket
    assert mirror.http.get("/ready").get_json()["files_not_here_yet"] == 1
    reply = mirror.http.get(f"/packages/{wheel.name}")
    assert reply.status_code == 200 and reply.get_data() == wheel.read_bytes()
    metadata = mirror.http.get(f"/packages/{wheel.name}.metadata")
    assert metadata.status_code == 200 and b"Name: demo" in metadata.get_data()

    assert mirror.client.wait_for_fill(30)
    assert local.read_bytes() == wheel.read_bytes()
    assert mirror.http.get("/ready").get_json()["files_not_here_yet"] == 0
    reads = len([r for r in proxy.requests if r[0] == "GET" and "demo-1.0-py3-none-any.whl" in r[1]])
    again = mirror.http.get(f"/packages/{wheel.name}")
    assert again.status_code == 200 and again.get_data() == wheel.read_bytes()
    assert len([r for r in proxy.requests if r[0] == "GET" and "demo-1.0-py3-none-any.whl" in r[1]]) == reads


@pytest.mark.parametrize("bucket", ["s3", "gcs"], indirect=True)
def test_a_file_the_fill_failed_on_is_fetched_at_a_later_check(
    bucket: BucketProbe, proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [wheel] = _bucket_with_a_snapshot(bucket, tmp_path, 1)
    proxy.add_rule("GET", r"packages(/|%2F)p0-1\.0-py3-none-any\.whl(\?|$)", Respond(404), times=1)
    mirror = Instance(bucket, tmp_path / "b", fill=True)
    mirror.client.refresh_now()
    assert mirror.client.wait_for_fill(30)
    assert mirror.served()[wheel.name].local_fingerprint == CATALOGUED  # failed: still catalogued
    mirror.check()
    assert mirror.client.wait_for_fill(30)
    assert mirror.served()[wheel.name].local_fingerprint == CATALOGUED  # not again at once

    monkeypatch.setattr(fill, "FILL_RETRY_SECONDS", 0.0)  # as if a minute had passed
    mirror.check()
    assert mirror.client.wait_for_fill(30)
    assert (mirror.folder.path / wheel.name).read_bytes() == wheel.read_bytes()
    assert mirror.served()[wheel.name].local_fingerprint != CATALOGUED


def test_a_fetched_file_whose_temp_was_swept_is_fetched_again_and_the_others_installed(
    bucket: BucketProbe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A slow batch: the temp file fetched first waits for the rest, unchanged, and a full
    listing's sweep of crashed writers' temps (STALE_TEMP_SECONDS, an hour: not waited
    for here, the download is wrapped to remove it) takes it before the install."""
    wheels = _bucket_with_a_snapshot(bucket, tmp_path, 3)
    mirror = Instance(bucket, tmp_path / "b", fill=True)
    real_download = mirror.driver.download
    swept: list[str] = []
    fetched: list[str] = []

    def download(name: str, target: Path, *args: object, **kwargs: object) -> str:
        sha256 = real_download(name, target, *args, **kwargs)
        fetched.append(name)
        if name == wheels[0].name and not swept:
            swept.append(name)
            target.unlink()  # the sweep
        return sha256

    monkeypatch.setattr(mirror.driver, "download", download)
    with caplog.at_level(logging.WARNING, logger="gcs_sync.client"):
        mirror.client.refresh_now()
        assert mirror.client.wait_for_fill(60)
    assert swept == [wheels[0].name]
    assert any(wheels[0].name in r.getMessage() and "swept" in r.getMessage() for r in caplog.records)
    for wheel in wheels:  # the swept one too: fetched again in the same fill
        assert (mirror.folder.path / wheel.name).read_bytes() == wheel.read_bytes()
        assert mirror.served()[wheel.name].local_fingerprint == mirror.folder.fingerprint(wheel.name)
    assert sorted(fetched) == sorted([wheels[0].name] + [wheel.name for wheel in wheels])  # it alone twice
    assert list(mirror.folder.path.glob(".*.part")) == []


def test_two_workers_fill_one_folder_and_each_file_is_installed_once(bucket: BucketProbe, tmp_path: Path) -> None:
    """Two workers on one folder (two clients, two lock objects on its lock file), each
    with its own fill: every file ends up here once, recorded with the file in place."""
    wheels = _bucket_with_a_snapshot(bucket, tmp_path, 20)
    first = Instance(bucket, tmp_path / "b", fill=True)
    second = Instance(bucket, tmp_path / "b", fill=True)
    first.client.refresh_now()
    second.client.refresh_now()
    assert first.client.wait_for_fill(60) and second.client.wait_for_fill(60)
    state = first.served()
    assert set(state) == {w.name for w in wheels}
    for wheel in wheels:
        assert (first.folder.path / wheel.name).read_bytes() == wheel.read_bytes()
        assert state[wheel.name].local_fingerprint == first.folder.fingerprint(wheel.name)
    assert not [p.name for p in first.folder.path.iterdir() if p.name.startswith(".") and p.name != ".gcs_sync"]


@pytest.mark.parametrize("bucket", ["s3"], indirect=True)
def test_an_upload_during_the_fill_is_served_here_at_once(
    bucket: BucketProbe, proxy: FaultProxy, tmp_path: Path, htpasswd: Path
) -> None:
    """The fill downloads outside the folder lock: an upload's own step under the lock
    (which waits 2 s at most, else the file appears only with a later sync) gets in while
    every package read of the fill is held back a second by the proxy."""
    writer = App(bucket, tmp_path / "a", htpasswd, PACKAGE_FILES="mirror")
    for i in range(24):
        assert writer.upload(make_wheel(tmp_path / "dist", f"p{i}", "1.0")).status_code == 200
    writer.client.sync()
    assert writer.client.wait_for_maintenance() and len(_snapshots(bucket)) == 1
    proxy.add_rule("GET", r"packages(/|%2F)p\d+-1\.0-py3-none-any\.whl", Delay(1.0))

    mirror = App(bucket, tmp_path / "b", htpasswd, PACKAGE_FILES="mirror", SYNC_CONCURRENCY=2)
    assert mirror.checked_get("/simple/").status_code == 200
    new = make_wheel(tmp_path / "dist", "fresh", "1.0")
    assert mirror.upload(new).status_code == 200
    assert not mirror.client.wait_for_fill(0)  # still filling: 24 files, 2 at a time, 1 s each
    page = mirror.http.get("/simple/fresh/")  # no check in between: this worker's own upload
    assert page.status_code == 200 and new.name in page.get_data(as_text=True)
    assert (tmp_path / "b" / new.name).read_bytes() == new.read_bytes()
    assert mirror.client.wait_for_fill(60)


@pytest.mark.parametrize("bucket", ["s3"], indirect=True)
def test_sibling_workers_download_each_file_once(bucket: BucketProbe, proxy: FaultProxy, tmp_path: Path) -> None:
    """The first worker to start its fill takes the fill lock; a sibling that starts
    while it runs does not fetch the same files (each package read held back 0.3 s, so
    the first is still at work)."""
    wheels = _bucket_with_a_snapshot(bucket, tmp_path, 16)
    package_read = r"packages(/|%2F)p\d+-1\.0-py3-none-any\.whl"
    proxy.add_rule("GET", package_read, Delay(0.3))
    first = Instance(bucket, tmp_path / "b", fill=True)
    second = Instance(bucket, tmp_path / "b", fill=True)
    first.client.refresh_now()
    age_view(second.client, 2)  # its own check now, not the one its sibling just made
    second.client.refresh_now()
    assert first.client.wait_for_fill(60) and second.client.wait_for_fill(60)
    reads = [path for method, path in proxy.requests if method == "GET" and re.search(package_read, path)]
    assert len(reads) == len(wheels), reads
    assert all((first.folder.path / w.name).read_bytes() == w.read_bytes() for w in wheels)


@pytest.mark.parametrize("bucket", ["s3"], indirect=True)
def test_a_fill_stopped_with_its_worker_is_taken_up_by_a_sibling(
    bucket: BucketProbe, proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker filling the folder exits mid-fill (its fill lock freed): a sibling's
    check takes the fill up, and every file ends up here."""
    wheels = _bucket_with_a_snapshot(bucket, tmp_path, 16)
    proxy.add_rule("GET", r"packages(/|%2F)p\d+-1\.0-py3-none-any\.whl", Delay(0.3))
    first = Instance(bucket, tmp_path / "b", fill=True)
    second = Instance(bucket, tmp_path / "b", fill=True)
    first.client.refresh_now()
    age_view(second.client, 2)
    second.client.refresh_now()  # its fill finds the first at work, and stops
    assert second.client.wait_for_fill(30)
    first.client.stop()  # a worker exiting: its fill stops after the downloads in flight
    assert first.client.wait_for_fill(30)
    assert any(e.local_fingerprint == CATALOGUED for e in second.served().values())
    monkeypatch.setattr(fill, "FILL_RETRY_SECONDS", 0.0)  # as if a minute had passed
    age_view(second.client, 2)
    second.client.refresh_now()
    assert second.client.wait_for_fill(60)
    assert all(e.local_fingerprint != CATALOGUED for e in second.served().values())
    assert all((second.folder.path / w.name).read_bytes() == w.read_bytes() for w in wheels)


@pytest.mark.parametrize("bucket", ["s3"], indirect=True)
def test_a_file_whose_stat_fails_during_a_feed_sync_stays_here(
    bucket: BucketProbe, proxy: FaultProxy, tmp_path: Path
) -> None:
    """A feed entry names a file held here and the bucket refuses its ``stat`` (403 to
    moto's HEAD): the file is no file gone from the bucket; it stays, served, and listed."""
    [wheel] = _bucket_with_a_snapshot(bucket, tmp_path, 1)
    mirror = Instance(bucket, tmp_path / "b", fill=True)
    mirror.client.refresh_now()
    assert mirror.client.wait_for_fill(30)
    before = mirror.served()[wheel.name]
    assert before.local_fingerprint != CATALOGUED
    announce(bucket, ChangeKind.RECORD, wheel.name)
    proxy.add_rule("HEAD", r"packages/p0-1\.0-py3-none-any\.whl", Respond(403), times=1)
    mirror.check()
    assert (mirror.folder.path / wheel.name).read_bytes() == wheel.read_bytes()
    assert mirror.served()[wheel.name] == before


@pytest.mark.parametrize("bad", ["entry_not_an_object", "position_a_list", "unsafe_name", "comma_missing",
                                 "local_fingerprint", "carriage_returns"])
def test_a_damaged_newest_snapshot_is_passed_over(bucket: BucketProbe, tmp_path: Path, bad: str) -> None:
    """A snapshot is bucket content: a newer one that is malformed (or names a path, or a
    local file) is logged and the one before it read; the cold start goes on."""
    wheels = _bucket_with_a_snapshot(bucket, tmp_path, 2)
    [good] = _snapshots(bucket)
    lines = gzip.decompress(bucket.get(good) or b"").decode().splitlines(keepends=True)
    head = json.loads(lines[0])
    if bad == "entry_not_an_object":
        lines.append(',"p9-1.0-py3-none-any.whl": []\n')
    elif bad == "position_a_list":
        head["position"] = []
    elif bad == "unsafe_name":
        lines.append(lines[-1].replace('"p1-1.0-py3-none-any.whl"', '"../p1-1.0-py3-none-any.whl"', 1))
    elif bad == "comma_missing":
        lines[-1] = lines[-1].removeprefix(",")
    elif bad == "carriage_returns":  # lines the state file's reader would split otherwise
        lines = [line.replace("\n", "\r\n") for line in lines]
    else:  # a local file's fingerprint, in the form the line has (a row or an object)
        comma = "," if lines[-1].startswith(",") else ""
        [(name, entry)] = json.loads("{" + lines[-1].removeprefix(",") + "}").items()
        if isinstance(entry, list):
            entry[1] = "1:2:3"  # ROW_FIELDS: remote_version, local_fingerprint, ...
        else:
            entry["local_fingerprint"] = "1:2:3"
        lines[-1] = comma + json.dumps(name) + ": " + json.dumps(entry) + "\n"
    assert "".join(lines[1:]) != gzip.decompress(bucket.get(good) or b"").decode().split("\n", 1)[1] \
        or bad == "position_a_list", "the damage must change the lines"
    newer = f".gcs_sync/snapshots/{int(time.time() * 1000) + 1:013d}-badbadbadbad.json.gz"
    bucket.put(newer, gzip.compress((json.dumps(head) + "\n" + "".join(lines[1:])).encode()))

    cold = Instance(bucket, tmp_path / "cold", catalog=True)
    cold.client.refresh_now()
    assert set(cold.served()) == {w.name for w in wheels}
    # Read from the older one: every entry as it has it (the damaged one names a local file).
    assert all(entry.local_fingerprint == CATALOGUED for entry in cold.served().values())
    assert cold.driver.calls["list"] == 2, dict(cold.driver.calls)  # the older snapshot: no listing
    assert not (tmp_path / "p1-1.0-py3-none-any.whl").exists()
    # The state it began writing from the damaged one's lines is gone; the older one's is in place.
    assert not [path.name for path in cold.folder.control.iterdir() if path.name.endswith(TEMP_SUFFIX)]
    assert set(StateFile(cold.folder.control, cold.driver.url).load()) == {w.name for w in wheels}


def test_a_snapshot_whose_last_line_has_no_line_break_is_read_and_its_state_too(
        bucket: BucketProbe, tmp_path: Path) -> None:
    """The state written from a snapshot's lines as they are is one a sibling worker (a
    reader of the state file) reads whole, even if the snapshot's text ends mid-line."""
    wheels = _bucket_with_a_snapshot(bucket, tmp_path, 3)
    [good] = _snapshots(bucket)
    text = gzip.decompress(bucket.get(good) or b"").decode()
    assert text.endswith("\n")
    bucket.put(f".gcs_sync/snapshots/{int(time.time() * 1000) + 1:013d}-nolinebreak0.json.gz",
               gzip.compress(text.rstrip("\n").encode()))
    cold = Instance(bucket, tmp_path / "cold", catalog=True)
    cold.client.refresh_now()
    assert set(cold.served()) == {w.name for w in wheels}
    sibling = StateFile(cold.folder.control, cold.driver.url)
    assert set(sibling.load()) == {w.name for w in wheels} and not sibling.needs_snapshot
