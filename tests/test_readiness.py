"""Health, readiness and App Engine's warmup request, in each of their states.

    /health        liveness: "Ok" at once, whatever the bucket does
    /ready         503 "starting" until the instance's first sync; then 200 "ok", or
                   200 "degraded" with the reason while the bucket fails (reads go on)
    /_ah/warmup    waits (bounded) for the first sync, then answers as /ready

A held folder lock stands for a sibling worker's long cold start: no sync can finish
while it is held, which makes "starting" observable without timing.
"""

from __future__ import annotations

import base64
import datetime
import json
import threading
from pathlib import Path
from typing import Iterator

import filelock
import pytest

from gcs_sync.clock import Moment
from gcs_sync.sync import readiness
from gcs_sync.sync.feed import ChangeKind
from gcs_sync.sync.state import StateFile
from gcs_sync.sync.view import ViewRecord
from gcs_sync.web import app as app_module
from testkit.buckets import BucketProbe
from testkit.fault_proxy import FaultProxy, Respond
from testkit.servers import links, start_instance
from testkit.wait import eventually

from .conftest import announce
from .test_app import AUTH, App

FILES = {"ready-1.0.tar.gz": b"one", "ready-2.0.tar.gz": b"two"}
# What anyone may read; the details (the bucket, messages, file names) need credentials.
# package_files: PACKAGE_FILES (mirror here, with the files its fill has not brought yet;
# cache mode has "cache", its usage, instead).
REPORT_KEYS = {"status", "files", "last_sync", "lag_seconds", "unservable_files", "reason", "package_files",
               "files_not_here_yet"}
DETAIL_KEYS = {"backend", "last_error", "unservable"}


def report(app: App, path: str = "/ready", auth: bool = True) -> tuple[int, dict]:
    reply = app.http.get(path, headers=AUTH if auth else {})
    assert reply.content_type == "application/json"
    return reply.status_code, json.loads(reply.get_data())


def wait_for_status(app: App, wanted: str, seconds: float = 15) -> tuple[int, dict]:
    """The first report in ``wanted`` status, or the last one if none came within ``seconds``."""
    reports: list[tuple[int, dict]] = []

    def reached() -> bool:
        reports.append(report(app))
        return reports[-1][1]["status"] == wanted

    eventually(reached, seconds)
    return reports[-1]


def waiting_warmup(app: App, answers: list[tuple[int, dict]]) -> threading.Thread:
    """A /_ah/warmup call in a thread of its own, still waiting half a second later."""
    warmup = threading.Thread(target=lambda: answers.append(report(app, "/_ah/warmup")))
    warmup.start()
    warmup.join(0.5)  # however long: the held lock keeps the first sync from running
    assert warmup.is_alive() and answers == []  # still waiting: the first sync cannot run
    return warmup


@pytest.fixture
def filled(bucket: BucketProbe) -> BucketProbe:
    for name, data in FILES.items():
        bucket.put(name, data)
    return bucket


@pytest.fixture
def held_lock(tmp_path: Path) -> Iterator[filelock.FileLock]:
    """The lock of the folder the ``App`` under test uses (tmp_path / "a")."""
    control = tmp_path / "a" / ".gcs_sync"
    control.mkdir(parents=True)
    lock = filelock.FileLock(str(control / "lock"))
    with lock:
        yield lock


def test_ready_is_starting_until_the_first_sync_then_ok_with_the_whole_report(
    filled: BucketProbe, tmp_path: Path, htpasswd: Path, held_lock: filelock.FileLock
) -> None:
    a = App(filled, tmp_path / "a", htpasswd)
    status, body = report(a, auth=False)
    assert status == 503 and body == {"status": "starting", "files": 0, "last_sync": None, "lag_seconds": None,
                                      "unservable_files": 0, "reason": None, "package_files": "mirror",
                                      "files_not_here_yet": 0}
    status, body = report(a)
    assert status == 503 and body.keys() == REPORT_KEYS | DETAIL_KEYS
    assert body["backend"] == a.driver.url and body["last_error"] is None and body["unservable"] == {}
    assert a.http.get("/health").status_code == 200  # liveness does not wait for the bucket

    held_lock.release()  # the "sibling" is done: /ready's own background sync goes on
    status, body = wait_for_status(a, "ok")
    assert status == 200 and body["status"] == "ok" and body["files"] == len(FILES)
    assert body["backend"] == a.driver.url and body["last_error"] is None
    last_sync = datetime.datetime.fromisoformat(body["last_sync"])
    assert last_sync.tzinfo is not None and body["lag_seconds"] >= 0


def test_warmup_answers_only_once_the_first_sync_is_done(
    filled: BucketProbe, tmp_path: Path, htpasswd: Path, held_lock: filelock.FileLock
) -> None:
    a = App(filled, tmp_path / "a", htpasswd)
    answers: list[tuple[int, dict]] = []
    warmup = waiting_warmup(a, answers)
    held_lock.release()
    warmup.join(app_module.WARMUP_WAIT_SECONDS)
    [(status, body)] = answers
    assert status == 200 and body["status"] == "ok" and body["files"] == len(FILES)
    # Everything it counted is served.
    assert a.http.get("/packages/ready-2.0.tar.gz").get_data() == b"two"


def test_warmup_holds_one_waiter_and_answers_the_others_at_once(
    filled: BucketProbe, tmp_path: Path, htpasswd: Path, held_lock: filelock.FileLock
) -> None:
    """Anyone may call /_ah/warmup: a second caller while one waits must not hold a thread too."""
    a = App(filled, tmp_path / "a", htpasswd)
    answers: list[tuple[int, dict]] = []
    first = waiting_warmup(a, answers)  # the one waiter
    others = [threading.Thread(target=lambda: answers.append(report(a, "/_ah/warmup"))) for _ in range(3)]
    for other in others:
        other.start()
    for other in others:
        other.join(5.0)  # generous: they do not wait for the sync
    assert not any(other.is_alive() for other in others)
    assert answers == [(503, {**answers[0][1], "status": "starting", "files": 0})] * 3
    held_lock.release()
    first.join(app_module.WARMUP_WAIT_SECONDS)
    status, body = answers[-1]
    assert status == 200 and body["status"] == "ok" and body["files"] == len(FILES)  # as before


@pytest.mark.parametrize("bucket", ["local"], indirect=True)
def test_warmup_gives_up_with_503_after_its_bound(
    filled: BucketProbe, tmp_path: Path, htpasswd: Path, held_lock: filelock.FileLock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app_module, "WARMUP_WAIT_SECONDS", 0.5)
    a = App(filled, tmp_path / "a", htpasswd)
    status, body = report(a, "/_ah/warmup")
    assert status == 503 and body["status"] == "starting" and body["files"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("bucket", ["gcs", "s3"], indirect=True)
def test_ready_reports_degraded_with_the_reason_and_recovers_by_itself(
    filled: BucketProbe, proxy: FaultProxy, tmp_path: Path, htpasswd: Path
) -> None:
    a = App(filled, tmp_path / "a", htpasswd, STORAGE_TIMEOUT="2", SYNC_INTERVAL="0.3")
    assert wait_for_status(a, "ok")[1]["files"] == len(FILES)

    proxy.add_rule(None, ".*", Respond(503, b"unavailable"))
    a.age_view()
    status, body = wait_for_status(a, "degraded")  # the probe itself starts the freshness check
    assert status == 200 and body["status"] == "degraded" and body["files"] == len(FILES)
    assert filled.name in body["last_error"]["error"]
    datetime.datetime.fromisoformat(body["last_error"]["at"])
    # Anyone may learn that, and why in a word; not the bucket's name nor the message.
    status, anonymous = report(a, auth=False)
    assert anonymous.keys() == REPORT_KEYS and anonymous["reason"] == "bucket unavailable"
    assert filled.name not in json.dumps(anonymous) and "ready-" not in json.dumps(anonymous)
    assert a.http.get("/packages/ready-1.0.tar.gz").get_data() == b"one"  # reads go on

    proxy.clear_rules()
    status, body = wait_for_status(a, "ok")  # past the back-off, with no restart
    assert status == 200 and body["last_error"] is None


@pytest.mark.parametrize("bucket", ["s3"], indirect=True)
def test_a_file_the_change_feed_names_that_cannot_be_fetched_is_reported_until_it_is(
    bucket: BucketProbe, proxy: FaultProxy, tmp_path: Path, htpasswd: Path
) -> None:
    """Between full listings changes arrive by the change feed: a file an entry names that
    cannot be fetched here shows in /ready as after a listing (else readiness says "ok"
    while the file answers 404), and stops showing once it is fetched. A proxy in front of
    moto fails the file's download, nothing else."""
    bucket.put("have-1.0.tar.gz", b"have")
    a = App(bucket, tmp_path / "a", htpasswd, STORAGE_TIMEOUT="2", FULL_SYNC_INTERVAL="3600")
    assert wait_for_status(a, "ok")[1]["files"] == 1
    proxy.add_rule("GET", r"/packages/later-1\.0\.tar\.gz$", Respond(503, b"unavailable"))
    bucket.put("later-1.0.tar.gz", b"later")
    announce(bucket, ChangeKind.ADDED, "later-1.0.tar.gz")  # as an upload through another instance
    a.age_view()
    a.checked_get("/simple/")
    assert a.http.get("/packages/later-1.0.tar.gz").status_code == 404
    status, body = report(a)
    assert (status, body["status"], body["unservable_files"]) == (200, "degraded", 1)
    assert list(body["unservable"]) == ["later-1.0.tar.gz"]

    proxy.clear_rules()
    a.age_view()
    a.checked_get("/simple/")
    assert a.http.get("/packages/later-1.0.tar.gz").get_data() == b"later"
    status, body = report(a)
    assert (status, body["status"], body["unservable_files"]) == (200, "ok", 0)


@pytest.mark.slow
@pytest.mark.parametrize("bucket", ["gcs"], indirect=True)
def test_under_gunicorn_warmup_returns_once_every_file_is_served(
    filled: BucketProbe, gcs_emulator: str, tmp_path: Path, htpasswd: Path
) -> None:
    """A cold start stretched by 50 ms a request (a distant bucket): App Engine's warmup
    request returns only when the whole index is in place."""
    for i in range(40):
        filled.put(f"warm-1.{i}.tar.gz", f"warm {i}".encode())
    host, port = gcs_emulator.removeprefix("http://").split(":")
    with FaultProxy(host, int(port)) as proxy:
        proxy.latency = 0.05
        instance = start_instance(
            {**filled.env(), "STORAGE_EMULATOR_HOST": proxy.url, "SYNC_CONCURRENCY": "2",
             "PASSWORD_FILE": str(htpasswd)},
            tmp_path / "warm", tmp_path, workers=2,
        )
        try:
            status, body = instance.get("/_ah/warmup")
            warm = json.loads(body)
            assert status == 200 and warm["status"] == "ok" and warm["files"] == 42
            assert len(links(instance, "warm")) == 40
            status, body = instance.get("/ready")
            assert status == 200 and json.loads(body)["files"] == 42
        finally:
            instance.stop()


@pytest.mark.parametrize("bucket", ["local"], indirect=True)
def test_anonymous_ready_names_no_bucket_user_or_file_unless_the_operator_opts_in(
    filled: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    a = App(filled, tmp_path / "a", htpasswd)
    assert wait_for_status(a, "ok")[0] == 200
    # A failure whose message names the bucket and a file, as real ones do.
    a.client.state.record_failure(f"sync from {a.driver.url} failed: ready-1.0.tar.gz", reason="bucket error")
    for headers in ({}, {"Authorization": "Basic " + base64.b64encode(b"alice:wrong").decode()}):
        reply = a.http.get("/ready", headers=headers)
        body = json.loads(reply.get_data())
        assert reply.status_code == 200 and body.keys() == REPORT_KEYS
        assert body["status"] == "degraded" and body["reason"] == "bucket error"
        text = reply.get_data(as_text=True)
        assert filled.name not in text and "ready-1.0" not in text and "alice" not in text
    status, body = report(a)  # the operator, with valid credentials
    assert body["last_error"]["error"].endswith("ready-1.0.tar.gz") and body["backend"] == a.driver.url

    public = App(filled, tmp_path / "b", htpasswd, READY_DETAILS="public")
    assert wait_for_status(public, "ok")[0] == 200
    status, body = report(public, auth=False)
    assert body.keys() == REPORT_KEYS | DETAIL_KEYS and body["backend"] == public.driver.url


def test_files_a_full_disk_kept_out_stay_reported_until_a_listing_fetches_everything(tmp_path: Path) -> None:
    # One worker's sync could not fetch a file nor record that (the disk was full); a
    # sibling's check that finds no new entry in the change feed, or a listing that failed
    # too, does not make the file servable: only a complete listing does. (Before, any
    # check by a sibling made readiness say "ok" while the file still answered 404.)
    state = StateFile(tmp_path / "control", "file:///bucket")
    (tmp_path / "control").mkdir()
    view = ViewRecord(state, sync_interval=5.0)
    first = Moment.now()
    state.record_listing(None, first, complete=False)
    view.unrecorded_unservable = (first, {"later-1.0.tar.gz": {"error": "No space left", "reason": "local disk full"}})
    view.mark_checked(first)

    def answer() -> tuple[str, int]:
        status = readiness.status(view, "file:///bucket", lock_timeout=10.0)
        return str(status["status"]), int(status["unservable_files"])

    assert answer() == ("degraded", 1)
    state.mark_pulled(Moment.now())  # a sibling's check: no new feed entry
    assert answer() == ("degraded", 1)
    state.record_listing(None, Moment.now(), complete=False)  # a sibling's listing that failed as well
    assert answer() == ("degraded", 1)
    state.record_listing(None, Moment.now(), complete=True)  # one that fetched everything
    assert answer() == ("ok", 0)
