"""Freshness as clients see it, under the faults that used to bend it:

    a listing that takes seconds    reads are served the last complete view at once; the
                                    check runs in the background and its result follows
    the wall clock stepped back     changes elsewhere still arrive within SYNC_INTERVAL
      (NTP, a VM migration)         plus one check (the clock is a real gunicorn's,
                                    stepped by libfaketime; the monotonic clock is not)
    a temp file that looks old      is never swept while it is still being written
    stale sha256 metadata           the digest served is the digest of the bytes served
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

import libfaketime
import pytest

from gcs_sync.sync.feed import ChangeKind
from gcs_sync.sync.folder import PackageFolder
from testkit.buckets import BucketProbe
from testkit.fault_proxy import Delay, FaultProxy
from testkit.packages import make_wheel
from testkit.servers import links, start_instance, twine_upload
from testkit.wait import eventually

from .conftest import announce
from .test_app import App


@pytest.mark.slow
@pytest.mark.parametrize("bucket", ["gcs", "s3"], indirect=True)
def test_reads_never_wait_for_a_listing(bucket: BucketProbe, proxy: FaultProxy, tmp_path: Path,
                                        htpasswd: Path) -> None:
    bucket.put("old-1.0.tar.gz", b"old")
    a = App(bucket, tmp_path / "a", htpasswd, SYNC_INTERVAL="1")
    assert a.http.get("/simple/old/").status_code == 200  # the cold start: that one waits
    # From here on every listing of the bucket takes 2 s (a slow or huge bucket), the
    # change feed's included.
    listing = proxy.add_rule("GET", "delimiter=", Delay(2))
    bucket.put("new-1.0.tar.gz", b"new")
    announce(bucket, ChangeKind.ADDED, "new-1.0.tar.gz")  # as an upload through another instance
    a.age_view()
    checks = a.client.checks_completed
    page = a.http.get("/simple/")
    # The read was answered while the check it started (its listing) was still under way...
    assert a.client.checks_completed == checks
    assert page.status_code == 200 and "old" in page.get_data(as_text=True)
    assert "new" not in page.get_data(as_text=True)  # ...with the last complete view
    assert a.http.get("/packages/old-1.0.tar.gz").get_data() == b"old"  # so is every other read
    assert a.client.wait_for_checks(checks, 30) and listing.hits >= 1  # (the feed's)
    assert a.http.get("/packages/new-1.0.tar.gz").get_data() == b"new"


def faked_clock(offset_file: Path) -> dict[str, str]:
    """Environment for a process whose wall clock follows ``offset_file`` ("+0", "-1h"),
    re-read at every call; its monotonic clock stays the machine's."""
    library = Path(libfaketime.__file__).parent / "vendor" / "libfaketime" / "src" / "libfaketime.so.1"
    assert library.is_file(), library
    return {"LD_PRELOAD": str(library), "FAKETIME_TIMESTAMP_FILE": str(offset_file), "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1", "DONT_FAKE_MONOTONIC": "1"}


@pytest.mark.slow
@pytest.mark.parametrize("bucket", ["local", "gcs"], indirect=True)
@pytest.mark.parametrize("step", ["-1h", "+1h"])
def test_a_clock_step_changes_nothing_a_client_sees(
    step: str, bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    offset = tmp_path / "clock-offset"
    offset.write_text("+0\n")
    env = {**bucket.env(), "PASSWORD_FILE": str(htpasswd), "SYNC_INTERVAL": "1"}
    a = start_instance({**env, **faked_clock(offset)}, tmp_path / "a", tmp_path, workers=2)
    b = start_instance(env, tmp_path / "b", tmp_path, workers=1)
    try:
        assert a.get("/simple/")[0] == 200
        # The wall clock of A's machine is stepped by an hour, while A serves.
        offset.write_text(f"{step}\n")  # read again at A's next clock call (FAKETIME_NO_CACHE)
        first, second = make_wheel(tmp_path / "one", "stepped", "1.0"), make_wheel(tmp_path / "two", "stepped", "2.0")
        assert twine_upload(b.url, first).returncode == 0
        # Through B, A sees it within SYNC_INTERVAL plus one check, as without the step.
        assert eventually(lambda: first.name in links(a, "stepped"), timeout=15)
        # And A's own uploads and their digests are right, with the clock where it is.
        assert twine_upload(a.url, second).returncode == 0
        digest = hashlib.sha256(second.read_bytes()).hexdigest()
        assert eventually(lambda: links(b, "stepped").get(second.name) == digest, timeout=15)
        assert links(a, "stepped").get(second.name) == digest
    finally:
        a.stop()
        b.stop()


def test_a_temp_file_still_being_written_is_never_swept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A temp file is swept only once this process has seen it unchanged for the stale
    time on its monotonic clock: its mtime may be hours "old" after a clock step."""
    monkeypatch.setattr("gcs_sync.sync.folder.STALE_TEMP_SECONDS", 0.3)
    folder = PackageFolder(tmp_path / "packages")
    writing, abandoned = folder.temp_path("writing-1.0.tar.gz"), folder.temp_path("abandoned-1.0.tar.gz")
    for temp in (writing, abandoned):
        temp.write_bytes(b"part")
        two_hours_ago = time.time() - 7200  # as a clock stepped forward by two hours makes it look
        os.utime(temp, (two_hours_ago, two_hours_ago))
    folder.sweep_stale_temps()
    assert writing.exists() and abandoned.exists()  # first seen now: not stale yet

    def swept() -> bool:
        with open(writing, "ab") as out:  # still being written
            out.write(b"more")
        folder.sweep_stale_temps()
        return not abandoned.exists()

    eventually(swept, 5, interval=0.1)
    assert not abandoned.exists() and writing.exists()


@pytest.mark.parametrize("bucket", ["gcs", "s3"], indirect=True)
def test_the_digest_served_is_the_digest_of_the_bytes_served(
    bucket: BucketProbe, tmp_path: Path, htpasswd: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Another tool rewrote the object and kept the metadata of the earlier version.
    stale = hashlib.sha256(b"the earlier bytes").hexdigest()
    bucket.put("rewritten-1.0.tar.gz", b"the bytes now", metadata={"sha256": stale})
    a = App(bucket, tmp_path / "a", htpasswd)
    page = a.http.get("/simple/rewritten/").get_data(as_text=True)
    [(name, digest)] = re.findall(r'/packages/([^"#]+)#sha256=([0-9a-f]+)"', page)
    body = a.http.get(f"/packages/{name}").get_data()
    assert body == b"the bytes now" and digest == hashlib.sha256(body).hexdigest() != stale
    assert "rewritten-1.0.tar.gz" in caplog.text and "sha256 metadata" in caplog.text


def test_a_state_file_a_killed_worker_was_writing_is_swept_from_the_control_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cold start writes the state from a catalog snapshot beside the state file (some
    30 MB at 50,000 files) while it reads it: if its worker is killed meanwhile, the temp
    file goes like any other left in the folder, and only then."""
    from gcs_sync.files import temp_name

    monkeypatch.setattr("gcs_sync.sync.folder.STALE_TEMP_SECONDS", 0.3)
    folder = PackageFolder(tmp_path / "packages")
    left = folder.control / temp_name("state.json")
    left.write_bytes(b'{"format": 3')
    kept = folder.control / "state.json"
    kept.write_bytes(b"{}")
    folder.sweep_stale_temps()
    assert left.exists()  # first seen now
    eventually(lambda: (folder.sweep_stale_temps(), not left.exists())[1], 5, interval=0.1)
    assert kept.exists()
