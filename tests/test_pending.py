"""A request of several files (a wheel and its .asc) killed between its bucket writes
never leaves half of it visible as a release (issue 9, item 4): its intent object hides
the files from every sync until the intent expires, then a sync removes what that
request stored. The first test: real gunicorn, a real SIGKILL, a fault proxy in front of
the GCS emulator or moto that holds the signature's write until the worker is dead."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from gcs_sync.drivers import FileStoreDriver
from gcs_sync.drivers.base import SHA256_KEY
from gcs_sync.errors import StorageError, StorageUnavailable
from gcs_sync.sync.client import StorageClient
from gcs_sync.sync.folder import PackageFolder
from gcs_sync.sync.pending import PendingUploads
from testkit.buckets import PREFIX, BucketProbe
from testkit.fault_proxy import Delay, FaultProxy, Respond
from testkit.packages import make_wheel
from testkit.servers import PASSWORD, USER, links, start_instance
from testkit.wait import eventually

from .test_app import App
from .test_crash import visible, wait_for, worker_pids
from .test_writes import upload_signed

EXPIRY = 4  # PENDING_UPLOAD_EXPIRY for these tests (the default is 120 s)
PENDING = ".gcs_sync/pending/"


def post_signed(url: str, wheel: Path, signature: bytes) -> int:
    reply = requests.post(url + "/", auth=(USER, PASSWORD), timeout=60, data={":action": "file_upload"}, files={
        "content": (wheel.name, wheel.read_bytes()), "gpg_signature": (wheel.name + ".asc", signature)})
    return reply.status_code


def hold_the_signature(bucket: BucketProbe, proxy: FaultProxy) -> None:
    """Hold the .asc write for longer than the test (the proxy drops it when it stops)."""
    if bucket.backend == "s3":  # the signature itself, not its record (.gcs_sync/records/NAME.asc)
        proxy.add_rule("PUT", rf"/{PREFIX}/[^/]+\.asc$", Delay(600))
    else:  # GCS names the object in the body: the intent, the wheel's core metadata file, record
        # and file, and the signature's record pass (each written before its file); the sixth waits
        proxy.add_rule("POST", r"/upload/", Delay(0), times=5)
        proxy.add_rule("POST", r"/upload/", Delay(600))


@pytest.mark.slow
@pytest.mark.parametrize("bucket", ["gcs", "s3"], indirect=True)
def test_a_worker_killed_between_the_wheel_and_its_signature_leaves_no_release(
    bucket: BucketProbe, proxy: FaultProxy, tmp_path: Path, htpasswd: Path, request: pytest.FixtureRequest
) -> None:
    server = request.getfixturevalue("gcs_emulator" if bucket.backend == "gcs" else "s3_server")
    variable = "STORAGE_EMULATOR_HOST" if bucket.backend == "gcs" else "AWS_ENDPOINT_URL"
    direct, proxied = {variable: server}, {variable: proxy.url}
    # FULL_SYNC_PROCESS off: the proxy's rules count writes by path, and a listing process's
    # catalog snapshot is a write too (tests/test_lister.py covers it).
    common = {**bucket.env(), "PASSWORD_FILE": str(htpasswd), "SYNC_INTERVAL": "1", "FULL_SYNC_INTERVAL": "2",
              "PENDING_UPLOAD_EXPIRY": str(EXPIRY), "FULL_SYNC_PROCESS": "false"}
    b = start_instance({**common, **direct}, tmp_path / "b", tmp_path, workers=1)  # another instance
    # The bucket's first catalog snapshot is b's (after its cold start's listing), so the
    # proxied one writes none while the rules count writes (one every ten minutes).
    try:
        assert b.get("/simple/")[0] == 200
        wait_for(lambda: any(name.startswith(".gcs_sync/snapshots/") for name in bucket.all_names()),
                 "the first catalog snapshot was written")
    except BaseException:
        b.stop()
        raise
    a = start_instance({**common, **proxied}, tmp_path / "a", tmp_path, workers=1)
    try:
        assert a.get("/simple/")[0] == 200  # both have a feed position
        wheel = make_wheel(tmp_path / "dist", "signed", "1.0")
        hold_the_signature(bucket, proxy)
        outcome: dict[str, object] = {}

        def upload() -> None:
            try:
                outcome["status"] = post_signed(a.url, wheel, b"signature")
            except requests.RequestException as exc:  # the connection dies with the worker
                outcome["error"] = exc

        client = threading.Thread(target=upload)
        client.start()
        wait_for(lambda: bucket.get(wheel.name) is not None, "the wheel is stored")
        (victim,) = worker_pids(a)
        os.kill(victim, signal.SIGKILL)
        client.join(timeout=60)
        assert outcome.get("status") != 200, proxy.requests
        assert bucket.get(wheel.name + ".asc") is None  # half of the request is in the bucket...

        # ...but no instance serves it: both list the bucket and hide the wheel.
        time.sleep(2.5)  # past FULL_SYNC_INTERVAL: the bound under test, so a sleep
        for instance in (a, b):
            assert instance.get("/simple/signed/")[0] == 404
            assert instance.get(f"/packages/{wheel.name}")[0] == 404
            assert wheel.name not in visible(instance.folder)
        # Once the intent has expired, a sync removes the wheel that request stored, then the intent.
        wait_for(lambda: b.get("/simple/") and not bucket.names(), "the dead upload is cleaned up")
        assert not {name for name in bucket.all_names() if name.startswith(PENDING)}
        for instance in (a, b):
            assert links(instance, "signed") == {}
        # The same upload again is whole.
        proxy.clear_rules()
        assert post_signed(a.url, wheel, b"signature") == 200
        assert bucket.names() == {wheel.name, wheel.name + ".asc"}
        wait_for(lambda: wheel.name in links(b, "signed"), "the other instance serves it")
        assert not {name for name in bucket.all_names() if name.startswith(PENDING)}
    finally:
        a.stop()
        b.stop()


def packages(bucket: BucketProbe) -> set[str]:
    return {name for name in bucket.names() if not name.startswith(PENDING)}


def intents(bucket: BucketProbe) -> set[str]:
    return {name for name in bucket.all_names() if name.startswith(PENDING)}


@pytest.mark.slow
@pytest.mark.parametrize("bucket", ["gcs", "s3"], indirect=True)
def test_when_the_intent_cannot_be_removed_the_upload_is_refused_and_undone(
    bucket: BucketProbe, proxy: FaultProxy, tmp_path: Path, htpasswd: Path
) -> None:
    """No 200 whose files a later clean-up would delete: the request fails and undoes."""
    settings = {"STORAGE_TIMEOUT": 2, "PENDING_UPLOAD_EXPIRY": 1}
    app = App(bucket, tmp_path / "packages", htpasswd, **settings)
    wheel = make_wheel(tmp_path / "dist", "signed", "1.0")
    proxy.add_rule("DELETE", "pending", Respond(503))
    assert upload_signed(app, wheel, b"signature").status_code == 503
    assert packages(bucket) == set() and len(intents(bucket)) == 1
    proxy.clear_rules()
    time.sleep(2)  # past the write breaker's window (STORAGE_TIMEOUT / 2): a bound under test
    assert upload_signed(app, wheel, b"signature").status_code == 200
    assert packages(bucket) == {wheel.name, wheel.name + ".asc"}
    # The failed request's intent names the same files: a new instance hides them until
    # it has seen that intent for PENDING_UPLOAD_EXPIRY, then finds them whole and keeps them.
    other = App(bucket, tmp_path / "other", htpasswd, **settings)

    def served() -> bool:
        if other.http.get("/simple/signed/").status_code == 200:
            return True
        other.age_view()
        return False

    eventually(served, 10, interval=0.3)
    assert other.http.get(f"/packages/{wheel.name}").get_data() == wheel.read_bytes()
    assert packages(bucket) == {wheel.name, wheel.name + ".asc"} and intents(bucket) == set()


def test_intents_are_small_objects_outside_the_package_listing(driver: FileStoreDriver, bucket: BucketProbe) -> None:
    driver.put_note(PENDING + "one.json", b'{"files": {}}')
    assert driver.read_note(PENDING + "one.json") == b'{"files": {}}'
    assert driver.read_note(PENDING + "two.json") is None
    assert driver.list_notes(PENDING) == [PENDING + "one.json"]
    assert driver.list_objects() == {}
    driver.delete(PENDING + "one.json")
    assert driver.list_notes(PENDING) == [] and intents(bucket) == set()


def test_a_dead_uploads_files_are_hidden_then_removed_and_only_they(
    driver: FileStoreDriver, bucket: BucketProbe, tmp_path: Path
) -> None:
    """The request's side played by hand up to its death (the SIGKILL test above does it
    for real on GCS and S3); here on every driver, the local folder's too, whose objects
    carry no token (the intent's sha256 identifies them there)."""
    folder = PackageFolder(tmp_path / "dead")
    wheel = make_wheel(tmp_path / "dist", "signed", "1.0")
    staged = [folder.stage(wheel.name, io.BytesIO(wheel.read_bytes())),
              folder.stage(wheel.name + ".asc", io.BytesIO(b"signature"))]
    dead = PendingUploads(driver)
    intent = dead.begin(staged)
    driver.upload(wheel.name, staged[0].path, create_only=True, metadata={SHA256_KEY: staged[0].sha256},
                  token=intent.token(wheel.name))  # ...and the worker dies here
    bucket.put("unrelated-1.0.tar.gz", b"not the intent's")
    observer = StorageClient(driver, PackageFolder(tmp_path / "observer"), sync_interval=1, lock_timeout=5,
                             pending_expiry=1)
    observer.sync()
    assert visible(observer.folder.path) == {"unrelated-1.0.tar.gz": b"not the intent's"}
    assert packages(bucket) == {wheel.name, "unrelated-1.0.tar.gz"}
    time.sleep(1.2)  # past pending_expiry: the bound under test, so a sleep
    observer.sync()
    assert packages(bucket) == {"unrelated-1.0.tar.gz"} and intents(bucket) == set()
    assert visible(observer.folder.path) == {"unrelated-1.0.tar.gz": b"not the intent's"}


class Interleaved(FileStoreDriver):
    """The real driver, but just before the write of ``name`` another instance's action
    runs: the only way to place it between two bucket calls of one request, which no
    server can do on demand. Every bucket call still goes to the real store."""

    def __init__(self, real: FileStoreDriver, name: str, action) -> None:
        super().__init__()
        self.real, self.name, self.action, self.url = real, name, action, real.url
        self.keeps_metadata = real.keeps_metadata

    def __getattr__(self, attribute):  # list_objects, stat, delete, notes...: the real ones
        return getattr(self.real, attribute)

    def upload(self, name, *args, **kwargs):
        if name == self.name and self.action is not None:
            action, self.action = self.action, None
            action()
        return self.real.upload(name, *args, **kwargs)

    # The abstract methods, all the real driver's.
    def list_objects(self): return self.real.list_objects()
    def check_bucket(self): return self.real.check_bucket()
    def stat(self, name): return self.real.stat(name)
    def download(self, *args, **kwargs): return self.real.download(*args, **kwargs)
    def _write(self, *args, **kwargs): return self.real._write(*args, **kwargs)
    def look_once(self, *args, **kwargs): return self.real.look_once(*args, **kwargs)
    def delete(self, *args, **kwargs): return self.real.delete(*args, **kwargs)
    def put_note(self, *args, **kwargs): return self.real.put_note(*args, **kwargs)
    def read_note(self, *args, **kwargs): return self.real.read_note(*args, **kwargs)
    def read_note_versioned(self, *args, **kwargs): return self.real.read_note_versioned(*args, **kwargs)
    def list_notes(self, *args, **kwargs): return self.real.list_notes(*args, **kwargs)
    def list_notes_after(self, *args, **kwargs): return self.real.list_notes_after(*args, **kwargs)
    def list_note_versions(self, *args, **kwargs): return self.real.list_note_versions(*args, **kwargs)


def stage_signed(folder: PackageFolder, wheel: Path, signature: bytes):
    return [folder.stage(wheel.name, io.BytesIO(wheel.read_bytes())),
            folder.stage(wheel.name + ".asc", io.BytesIO(signature))]


def test_a_slow_upload_taken_for_dead_gets_no_200_and_leaves_no_half_release(
    driver: FileStoreDriver, bucket: BucketProbe, tmp_path: Path
) -> None:
    """Threaded workers never kill a slow request: another instance may take it for a dead
    one (here its expiry is short) and clean up between its wheel and its signature. The
    request must then fail, not answer 200 for a wheel that is gone."""
    wheel = make_wheel(tmp_path / "dist", "slow", "1.0")
    observer = StorageClient(driver, PackageFolder(tmp_path / "observer"), sync_interval=1, lock_timeout=5,
                             pending_expiry=0.05)
    # The observer sees the intent, and once it is older than its expiry, cleans up.
    # The sleep is the bound under test: past pending_expiry.
    take_for_dead = lambda: (observer.sync(), time.sleep(0.1), observer.sync())  # noqa: E731
    slow = StorageClient(Interleaved(driver, wheel.name + ".asc", take_for_dead),
                         PackageFolder(tmp_path / "slow"), sync_interval=1, lock_timeout=5)
    with pytest.raises(StorageError, match="taken for an abandoned one"):
        slow.publish(stage_signed(slow.folder, wheel, b"signature"), overwrite=False)
    assert packages(bucket) == set() and intents(bucket) == set()


def test_a_retry_that_took_over_keeps_its_files_when_the_first_request_fails(
    driver: FileStoreDriver, bucket: BucketProbe, tmp_path: Path
) -> None:
    """Request A stored the wheel; B, the same upload again on another instance, finds it
    byte for byte, takes it over and answers 200; then A fails on its signature. A's undo
    must not delete the wheel that B's 200 covers."""
    wheel = make_wheel(tmp_path / "dist", "twice", "1.0")
    b = StorageClient(driver, PackageFolder(tmp_path / "b"), sync_interval=1, lock_timeout=5)
    retry = lambda: b.publish(stage_signed(b.folder, wheel, b"signature"), overwrite=False)  # noqa: E731

    def retry_then_fail() -> None:
        retry()  # B's 200
        raise StorageUnavailable("upload", wheel.name + ".asc", "no answer (a test stand-in for a timeout)")

    a = StorageClient(Interleaved(driver, wheel.name + ".asc", retry_then_fail), PackageFolder(tmp_path / "a"),
                      sync_interval=1, lock_timeout=5)
    with pytest.raises(StorageUnavailable):
        a.publish(stage_signed(a.folder, wheel, b"signature"), overwrite=False)
    assert packages(bucket) == {wheel.name, wheel.name + ".asc"}
    assert bucket.get(wheel.name) == wheel.read_bytes() and bucket.get(wheel.name + ".asc") == b"signature"


class DeleteHooked(Interleaved):
    """The real driver, but just before the delete of ``name`` another action runs (a
    stand-in for the moment between a clean-up's look and its delete)."""

    def delete(self, name, *args, **kwargs):
        if name == self.name and self.action is not None:
            action, self.action = self.action, None
            action()
        return self.real.delete(name, *args, **kwargs)


def test_a_slow_upload_that_finds_its_intent_claimed_answers_no_200(
    driver: FileStoreDriver, bucket: BucketProbe, tmp_path: Path
) -> None:
    """A clean-up claims the intent and looks (the wheel there, the signature not yet);
    then the slow request's signature lands and it ends; then the clean-up deletes the
    wheel. The request must not have answered 200, and no lone file may stay."""
    wheel = make_wheel(tmp_path / "dist", "raced", "1.0")
    at_signature, go_on = threading.Event(), threading.Event()
    outcome: list[object] = []

    def pause_before_signature() -> None:
        at_signature.set()
        go_on.wait(10)

    writer = StorageClient(Interleaved(driver, wheel.name + ".asc", pause_before_signature),
                           PackageFolder(tmp_path / "writer"), sync_interval=1, lock_timeout=5)

    def publish() -> None:
        try:
            outcome.append(writer.publish(stage_signed(writer.folder, wheel, b"signature"), overwrite=False))
        except StorageError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=publish)
    thread.start()
    assert at_signature.wait(10)

    def let_the_writer_finish() -> None:
        go_on.set()
        thread.join(30)

    observer = StorageClient(DeleteHooked(driver, wheel.name, let_the_writer_finish),
                             PackageFolder(tmp_path / "observer"), sync_interval=1, lock_timeout=5,
                             pending_expiry=0.05)
    observer.sync()  # sees the intent
    time.sleep(0.1)  # past pending_expiry: the bound under test, so a sleep
    observer.sync()  # expires it: claims, looks, and (hooked) lets the writer end before it deletes
    thread.join(30)
    [result] = outcome
    assert isinstance(result, StorageError), result  # no 200
    assert packages(bucket) == set() and intents(bucket) == set()
