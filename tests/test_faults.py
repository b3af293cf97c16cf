"""Faults between the index and its bucket, injected by a loopback proxy in front of the
real GCS emulator and moto's S3 server (testkit/fault_proxy.py).

Persistent outage (every request fails the same way), per operation:
    index read, file download   200 from the local copy; readiness "degraded", with the reason
    upload, removal             503 within the storage budget; nothing changed in the
                                bucket or the folder; the same request succeeds after recovery
    cold start                  no 5xx: an empty index (404 for a project); readiness
                                "starting" (503) with the reason
    freshness check             fails, is logged, backs off; after recovery every instance
                                converges at its next check, with no restart
Transient fault (the first request of an operation fails): the SDK's retry or the upload
token recovers it, and the client never sees it.

STORAGE_TIMEOUT=2 keeps each failing bucket operation to about 2 s (1 s per attempt).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from testkit.buckets import BucketProbe
from testkit.fault_proxy import Delay, FaultProxy, Reset, Respond, Truncate
from testkit.packages import make_wheel
from testkit.wait import eventually

from .test_app import AUTH, App

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("bucket", ["gcs", "s3"], indirect=True)]

SYNC_INTERVAL = 0.5
BUDGET = {"STORAGE_TIMEOUT": "2", "SYNC_INTERVAL": str(SYNC_INTERVAL)}

OUTAGES = {
    "503": Respond(503, b"unavailable"),
    "429": Respond(429, b"slow down", {"Retry-After": "0"}),
    "500": Respond(500, b"internal error"),
    # Past every attempt's timeout; then forwarded, so a write may land after the client
    # gave up: the 503 says so, and the retry after recovery is accepted.
    "no answer": Delay(5),
    "connection reset": Reset(),
}


@pytest.fixture(params=list(OUTAGES))
def fault(request: pytest.FixtureRequest) -> str:
    """Each kind of outage (a fault on every request), or of transient fault (on one)."""
    return request.param


@pytest.fixture
def a(bucket: BucketProbe, proxy: FaultProxy, tmp_path: Path, htpasswd: Path) -> App:
    """An instance through the fault proxy, on a bucket that holds one file."""
    bucket.put("have-1.0.tar.gz", b"have")
    return App(bucket, tmp_path / "a", htpasswd, **BUDGET)


def readiness(app: App) -> tuple[int, dict]:
    """/ready (with the details) once the check it starts, if one is due, is done."""
    reply = app.checked_get("/ready", headers=AUTH)
    return reply.status_code, json.loads(reply.get_data())


def remove(app: App, name: str, version: str):
    return app.http.post("/", headers=AUTH, data={":action": "remove_pkg", "name": name, "version": version})


def next_check() -> None:
    """Past the interval and the back-off after a failure: a bound under test (the instance
    checks the bucket again on its own, by the clock), so a sleep, not a poll."""
    time.sleep(SYNC_INTERVAL * 1.5)


def past_the_write_breaker() -> None:
    """After a write failed as unavailable, writes are refused without a try for
    STORAGE_TIMEOUT / 2 (gcs_sync/sync/breaker.py); the first one after that probes. A bound
    under test, so a sleep."""
    time.sleep(float(BUDGET["STORAGE_TIMEOUT"]) / 2)


def test_an_outage_keeps_reads_local_refuses_writes_cleanly_and_heals_by_itself(
    fault: str, a: App, bucket: BucketProbe, proxy: FaultProxy, tmp_path: Path, htpasswd: Path
) -> None:
    mine, new = make_wheel(tmp_path / "one", "mine", "1.0"), make_wheel(tmp_path / "two", "new", "1.0")
    assert a.upload(mine).status_code == 200
    assert a.http.get("/simple/have/").status_code == 200
    assert readiness(a)[1]["status"] == "ok"
    bucket_before = {name: bucket.get(name) for name in bucket.names()}

    proxy.add_rule(None, ".*", OUTAGES[fault])
    next_check()
    # Reads: the local copy, no 5xx.
    assert a.http.get("/simple/have/").status_code == 200
    assert a.http.get("/packages/have-1.0.tar.gz").get_data() == b"have"
    status, report = readiness(a)
    assert status == 200 and report["status"] == "degraded" and report["files"] == 2
    assert a.settings.store_url.split("://")[1].split("/")[0] in report["last_error"]["error"]
    # Writes: a clear 503 within the budget, and nothing half-done.
    started = time.monotonic()
    refused = a.upload(new)
    assert refused.status_code == 503 and "Bucket write failed" in refused.status
    refused_removal = remove(a, "mine", "1.0")
    assert refused_removal.status_code == 503
    writes_took = time.monotonic() - started
    assert not (a.folder / new.name).exists() and a.leftovers() == []
    assert a.http.get(f"/packages/{mine.name}").status_code == 200
    # A cold start during the outage: no 5xx, and readiness says why it is not ready.
    c = App(bucket, tmp_path / "c", htpasswd, **BUDGET)
    assert c.http.get("/simple/have/").status_code == 404
    status, report = readiness(c)
    assert status == 503 and report["status"] == "starting" and report["last_error"]
    proxy.clear_rules()
    if fault == "no answer":  # delayed writes may have landed since, whole
        eventually(lambda: proxy.in_flight == 0, 10)  # each forwarded after its Delay
        assert "may still have been applied" in refused.get_data(as_text=True)
        landed = {name: bucket.get(name) for name in bucket.names()}
        assert landed.get(new.name, new.read_bytes()) == new.read_bytes()
        assert {k: v for k, v in landed.items() if k not in (new.name, mine.name)} == {"have-1.0.tar.gz": b"have"}
    else:
        assert {name: bucket.get(name) for name in bucket.names()} == bucket_before

    # Recovery: no restart, no manual step.
    next_check()
    past_the_write_breaker()
    assert a.upload(new).status_code == 200
    assert remove(a, "mine", "1.0").status_code == 200
    assert bucket.names() == {"have-1.0.tar.gz", new.name}
    for app in (a, c):
        app.age_view()
        assert app.checked_get("/simple/have/").status_code == 200
        status, report = readiness(app)
        assert status == 200 and report["status"] == "ok" and report["last_error"] is None
    assert c.http.get(f"/packages/{new.name}").get_data() == new.read_bytes()
    assert c.http.get("/simple/mine/").status_code == 404
    # The bucket was never waited on past the budget: two writes, each about STORAGE_TIMEOUT
    # plus one confirmation attempt, well inside gunicorn's 30 s.
    assert writes_took < 30, writes_took


TRANSIENT = OUTAGES  # the same faults, on one request only


def test_a_single_failed_request_is_retried_and_never_seen_by_the_client(
    fault: str, a: App, bucket: BucketProbe, proxy: FaultProxy, tmp_path: Path
) -> None:
    for operation in ("cold start", "upload", "removal", "freshness check"):
        rule = proxy.add_rule(None, ".*", TRANSIENT[fault], times=1)
        if operation == "cold start":
            assert a.http.get("/simple/have/").status_code == 200
        elif operation == "upload":
            wheel = make_wheel(tmp_path / "dist", "fresh", "1.0")
            assert a.upload(wheel).status_code == 200
            assert bucket.get(wheel.name) == wheel.read_bytes()
        elif operation == "removal":
            assert remove(a, "fresh", "1.0").status_code == 200
            assert bucket.get("fresh-1.0-py3-none-any.whl") is None
        else:
            bucket.put("later-1.0.tar.gz", b"later")
            # Another instance's feed entry for it, written straight to the store (not
            # through the proxy, whose one fault is for this instance's check).
            bucket.put(f".gcs_sync/feed/{int(time.time() * 1000):013d}-{uuid.uuid4().hex[:12]}.a.-.later-1.0.tar.gz",
                       b"{}")
            a.age_view()
            assert a.checked_get("/simple/later/").status_code == 200
        assert rule.hits == 1, operation


def test_a_download_cut_short_is_never_served_and_comes_whole_at_the_next_check(
    bucket: BucketProbe, proxy: FaultProxy, tmp_path: Path, htpasswd: Path
) -> None:
    data = b"0123456789" * 20_000
    bucket.put("cut-1.0.tar.gz", data)
    rule = proxy.add_rule("GET", r"cut-1\.0\.tar\.gz", Truncate(1000))
    a = App(bucket, tmp_path / "a", htpasswd, **BUDGET)
    page = a.http.get("/simple/cut/")
    assert page.status_code == 404 and rule.hits >= 1  # not listed: it is not whole
    assert a.http.get("/packages/cut-1.0.tar.gz").status_code == 404
    assert a.leftovers() == []
    # Readiness tells: a file of the bucket is not served here, how many and why, and
    # the warmup does not call an instance ready without it.
    status, report = readiness(a)
    assert status == 200 and report["status"] == "degraded" and report["unservable_files"] == 1
    assert report["reason"] == "bucket unavailable" and list(report["unservable"]) == ["cut-1.0.tar.gz"]
    assert a.http.get("/_ah/warmup").status_code == 503
    proxy.clear_rules()
    next_check()
    assert a.checked_get("/packages/cut-1.0.tar.gz").get_data() == data
    status, report = readiness(a)
    assert report["status"] == "ok" and report["unservable_files"] == 0
    assert a.http.get("/_ah/warmup").status_code == 200


def test_a_stopped_storage_server_is_an_outage_and_its_return_needs_no_restart(
    a: App, bucket: BucketProbe, proxy: FaultProxy, tmp_path: Path
) -> None:
    """The storage server stops (connections refused) and comes back on the same port."""
    assert a.http.get("/simple/have/").status_code == 200
    proxy.stop()
    next_check()
    assert a.http.get("/packages/have-1.0.tar.gz").get_data() == b"have"
    status, report = readiness(a)
    assert status == 200 and report["status"] == "degraded"
    wheel = make_wheel(tmp_path / "dist", "later", "1.0")
    assert a.upload(wheel).status_code == 503
    host, port = proxy.upstream
    with FaultProxy(host, port, port=proxy.port):  # back, same address
        next_check()
        past_the_write_breaker()
        assert a.upload(wheel).status_code == 200
        a.age_view()
        assert readiness(a)[1]["status"] == "ok"
    assert bucket.get(wheel.name) == wheel.read_bytes()
