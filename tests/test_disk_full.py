"""A full local disk, for real: the package folder (and TMPDIR, where bottle spools large
request bodies) on a 4 MiB tmpfs that the test fills, under real gunicorn.

    reads              keep being served from what is in place (no 5xx)
    a new bucket file  cannot be fetched: /ready says "degraded", how many, and why
    an upload          503 with the reason, nothing stored in the bucket
    space again        the next check fetches the file, uploads succeed, /ready is "ok"
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from gcs_sync.sync.feed import ChangeKind
from testkit.buckets import BucketProbe
from testkit.packages import make_wheel
from testkit.servers import start_instance, upload_form
from testkit.wait import eventually

from .conftest import announce

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI and the dev machines run as root)")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], check=True, timeout=30)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True, timeout=30)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte; returns the filler file."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as out:
        for size in (1 << 16, 1 << 10, 1):
            try:
                while True:
                    out.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return filler


def ready(instance) -> dict:
    return json.loads(instance.get("/ready", auth=True)[1])


@pytest.mark.parametrize("bucket", ["local"], indirect=True)
def test_a_full_disk_keeps_reads_served_and_says_so(
    bucket: BucketProbe, small_disk: Path, tmp_path: Path, htpasswd: Path
) -> None:
    bucket.put("have-1.0.tar.gz", b"have" * 100)
    (small_disk / "tmp").mkdir()
    instance = start_instance(
        {**bucket.env(), "PASSWORD_FILE": str(htpasswd), "SYNC_INTERVAL": "0.5", "TMPDIR": str(small_disk / "tmp")},
        small_disk / "packages", tmp_path, workers=2,
    )
    try:
        assert eventually(lambda: instance.get("/simple/have/")[0] == 200, 20)
        filler = fill(small_disk)
        bucket.put("later-1.0.tar.gz", b"x" * 200_000)
        announce(bucket, ChangeKind.ADDED, "later-1.0.tar.gz")  # as an upload through another instance

        # Nothing can be written to share it, so each worker learns it at its own next
        # check: wait until every answer (either worker's) says so.
        assert eventually(lambda: all(ready(instance)["unservable_files"] == 1 for _ in range(6)), 20)
        report = ready(instance)
        assert report["status"] == "degraded" and report["reason"] == "local disk full"
        assert list(report["unservable"]) == ["later-1.0.tar.gz"]
        for _ in range(10):  # reads go on, however often the check runs and fails (over a second)
            assert instance.get("/simple/have/")[0] == 200
            assert instance.get("/packages/have-1.0.tar.gz")[1] == b"have" * 100
            time.sleep(0.1)

        wheel = make_wheel(tmp_path / "dist", "upload", "1.0")
        status, body = upload_form(instance.url, wheel.name, wheel.read_bytes())
        assert status == 503 and "disk full" in body and wheel.name in body
        big = make_wheel(tmp_path / "big", "bigupload", "1.0", value=os.urandom(200_000).hex())
        status, body = upload_form(instance.url, big.name, big.read_bytes())  # spooled by bottle to TMPDIR
        assert status == 503 and "disk full" in body.lower()
        assert bucket.names() == {"have-1.0.tar.gz", "later-1.0.tar.gz"}
        assert "Traceback" not in instance.log()

        filler.unlink()
        assert eventually(lambda: instance.get("/packages/later-1.0.tar.gz")[1] == b"x" * 200_000, 20)
        assert eventually(lambda: ready(instance)["status"] == "ok", 20)
        assert upload_form(instance.url, wheel.name, wheel.read_bytes())[0] == 200
    finally:
        instance.stop()
