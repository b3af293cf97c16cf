"""The commands that keep the package files' records (``python -m gcs_sync backfill|yank|
unyank``, and the records ``push`` stores) on every backend, against the real storage
servers: what the operator sees (output, exit code) and what is left in the bucket."""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from gcs_sync.drivers import make_driver
from gcs_sync.config import Settings
from testkit.buckets import BucketProbe
from testkit.packages import make_wheel

from .test_cli import env_for, run_cli, run_cli_process  # noqa: F401  (run_cli is a fixture)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wheel_bytes(tmp_path: Path, name: str, version: str, requires_python: str) -> bytes:
    """A real wheel (testkit's) whose METADATA says ``Requires-Python``."""
    return make_wheel(tmp_path / "build" / f"{name}-{version}", name, version,
                      requires_python=requires_python).read_bytes()


def sdist_bytes(name: str, version: str, requires_python: str) -> bytes:
    """A small sdist: NAME-VERSION/PKG-INFO and a setup.py, gzipped."""
    files = {
        "PKG-INFO": (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                     f"Requires-Python: {requires_python}\n").encode(),
        "setup.py": b"from setuptools import setup\nsetup()\n",
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for member, data in files.items():
            info = tarfile.TarInfo(f"{name}-{version}/{member}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def record_of(bucket: BucketProbe, filename: str) -> Optional[dict[str, Any]]:
    data = bucket.get(f".gcs_sync/records/{filename}")
    return None if data is None else json.loads(data)


def metadata_of(bucket: BucketProbe, filename: str) -> Optional[bytes]:
    return bucket.get(f".gcs_sync/metadata/{filename}")


def packages(bucket: BucketProbe) -> set[str]:
    return bucket.names()


def snapshot(bucket: BucketProbe) -> tuple[dict[str, Optional[bytes]], list[str]]:
    """Every object with its bytes, the records and core metadata files included, and the
    change feed's entries."""
    return {name: bucket.get(name) for name in bucket.names() | bucket.record_names()}, bucket.feed_names()


def object_versions(env: dict[str, str]) -> dict[str, str]:
    """The package objects' versions, as the index's own driver lists them."""
    driver = make_driver(Settings.from_env({**env, "AUTHENTICATE": "."}))
    return {name: str(obj.version) for name, obj in driver.list_objects().items()}


def epoch(rfc3339: str) -> float:
    return datetime.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


WHEEL = "demo-1.0-py3-none-any.whl"
SDIST = "demo-1.0.tar.gz"
BAD = "bad-1.0-py3-none-any.whl"


# -- backfill --------------------------------------------------------------------------


def test_backfill_computes_each_missing_record_once_and_notes_a_bad_file(
    bucket: BucketProbe, tmp_path: Path, run_cli
) -> None:
    wheel, sdist = wheel_bytes(tmp_path, "demo", "1.0", ">=3.9"), sdist_bytes("demo", "1.0", ">=3.8")
    before_put = time.time()
    bucket.put(WHEEL, wheel)
    bucket.put(SDIST, sdist)
    bucket.put(BAD, b"not a zip at all")
    bucket.put("README.txt", b"not a package")
    after_put = time.time()
    orphan = {"format": 1, "filename": "gone-1.0.tar.gz", "size": 1, "sha256": "0" * 64,
              "upload_time": "2020-01-01T00:00:00.000000Z"}
    bucket.put(".gcs_sync/records/gone-1.0.tar.gz", json.dumps(orphan).encode())
    time.sleep(1.2)  # so that "now" and the objects' times differ
    env = env_for(bucket, tmp_path / "server-folder")
    feed = bucket.feed_names()

    run = run_cli(env, "backfill")
    assert run.code == 0, run.out + run.err
    assert "3 records computed" in run.out and "0 already there, 0 failed, 1 skipped" in run.out
    assert f"computed: 3\n  {BAD}\n  {WHEEL}\n  {SDIST}" in run.out
    assert f"files whose metadata could not be read (served without it; the record says why): 1\n  {BAD}: " \
        in run.out
    assert "records without a package file (left alone): 1\n  gone-1.0.tar.gz" in run.out
    assert "ok: every package file has its record" in run.out
    # Running instances are told of each new record (not of the orphan, left alone).
    assert "change feed written: running instances take the records at their next check" in run.out
    assert sorted(bucket.feed_since(feed)) == [("r", name) for name in sorted((BAD, WHEEL, SDIST))]

    for name, data, requires in ((WHEEL, wheel, ">=3.9"), (SDIST, sdist, ">=3.8")):
        record = record_of(bucket, name)
        assert record is not None
        assert (record["sha256"], record["size"], record["requires_python"]) == (sha256(data), len(data), requires)
        assert record["uploader"] is None and record["yanked"] is False
        # The object's time (the store's clock; S3 keeps whole seconds), not the backfill's.
        assert before_put - 1.0 <= epoch(record["upload_time"]) <= after_put + 0.5
    wheel_record = record_of(bucket, WHEEL)
    assert wheel_record is not None and wheel_record["metadata_sha256"] is not None
    metadata = metadata_of(bucket, WHEEL)
    assert metadata is not None and sha256(metadata) == wheel_record["metadata_sha256"]
    assert b"Requires-Python: >=3.9" in metadata
    sdist_record = record_of(bucket, SDIST)
    assert sdist_record is not None and sdist_record["metadata_sha256"] is None  # an sdist's PKG-INFO is not served
    bad = record_of(bucket, BAD)
    assert bad is not None and bad["metadata_sha256"] is None and bad["metadata_problem"]
    assert record_of(bucket, "gone-1.0.tar.gz") == orphan  # reported, not deleted
    assert bucket.get(WHEEL) == wheel and bucket.get(SDIST) == sdist  # the files are never touched

    before = snapshot(bucket)
    again = run_cli(env, "backfill")  # idempotent: nothing computed, nothing written
    assert again.code == 0, again.out
    assert "0 records computed" in again.out and "3 already there, 0 failed" in again.out
    assert snapshot(bucket) == before

    # A file replaced by another tool: its record describes other bytes, so it is computed again.
    newer = sdist_bytes("demo", "1.0", ">=3.11")
    bucket.put(SDIST, newer)
    third = run_cli(env, "backfill")
    assert third.code == 0, third.out
    assert "1 records computed" in third.out and f"computed: 1\n  {SDIST}" in third.out
    replaced = record_of(bucket, SDIST)
    assert replaced is not None and (replaced["sha256"], replaced["requires_python"]) == (sha256(newer), ">=3.11")


def test_backfill_replaces_an_unreadable_record_and_a_missing_metadata_file(
    bucket: BucketProbe, tmp_path: Path, run_cli
) -> None:
    wheel = wheel_bytes(tmp_path, "demo", "1.0", ">=3.9")
    bucket.put(WHEEL, wheel)
    bucket.put(SDIST, sdist_bytes("demo", "1.0", ">=3.8"))
    env = env_for(bucket, tmp_path / "server-folder")
    assert run_cli(env, "backfill").code == 0
    assert run_cli(env, "yank", "demo", "1.0", "--reason", "old").code == 0
    uploaded = record_of(bucket, WHEEL)["upload_time"]  # type: ignore[index]
    bucket.put(f".gcs_sync/records/{SDIST}", b"{not json")
    bucket.delete(f".gcs_sync/metadata/{WHEEL}")

    run = run_cli(env, "backfill")
    assert run.code == 0, run.out
    assert f"computed: 2\n  {WHEEL}\n  {SDIST}" in run.out
    record = record_of(bucket, SDIST)
    assert record is not None and record["requires_python"] == ">=3.8"
    assert record["yanked"] is False  # an unreadable record is computed anew
    wheel_record = record_of(bucket, WHEEL)
    metadata = metadata_of(bucket, WHEEL)
    assert wheel_record is not None and metadata is not None and sha256(metadata) == wheel_record["metadata_sha256"]
    # A record of these bytes that only lost its metadata file keeps what only it knows.
    assert (wheel_record["yanked"], wheel_record["yank_reason"], wheel_record["upload_time"]) == (True, "old", uploaded)


@pytest.mark.slow
def test_backfill_and_yank_as_processes_with_a_progress_bar(bucket: BucketProbe, tmp_path: Path) -> None:
    bucket.put(SDIST, sdist_bytes("demo", "1.0", ">=3.8"))
    env = env_for(bucket, tmp_path / "server-folder")
    quiet = run_cli_process(env, "backfill")  # stderr is a pipe here: no bar
    assert quiet.code == 0 and quiet.err == "" and "1 records computed" in quiet.out
    shown = run_cli_process(env, "backfill", "--progress", "--concurrency", "2")
    assert shown.code == 0 and "backfill: " in shown.err and "0 records computed" in shown.out
    yank = run_cli_process(env, "yank", "demo", "1.0")
    assert (yank.code, yank.out) == (0, f"yanked demo 1.0: {SDIST}\n")
    missing = run_cli_process(env, "unyank", "demo", "2.0")
    assert missing.code == 1 and "no files of demo 2.0" in missing.err


# -- yank, unyank ----------------------------------------------------------------------


def test_yank_and_unyank_change_only_the_records(bucket: BucketProbe, tmp_path: Path, run_cli) -> None:
    wheel = wheel_bytes(tmp_path, "demo", "1.0", ">=3.9")
    bucket.put(WHEEL, wheel)
    bucket.put(SDIST, sdist_bytes("demo", "1.0", ">=3.8"))
    bucket.put("demo-2.0.tar.gz", sdist_bytes("demo", "2.0", ">=3.8"))
    bucket.put("other-1.0.tar.gz", sdist_bytes("other", "1.0", ">=3.8"))
    env = env_for(bucket, tmp_path / "server-folder")
    versions = object_versions(env)
    files = {name: bucket.get(name) for name in packages(bucket)}
    feed = bucket.feed_names()

    yank = run_cli(env, "yank", "demo", "1.0", "--reason", "broken on Windows")
    assert yank.code == 0, yank.out + yank.err
    assert yank.out == f"yanked demo 1.0: {WHEEL}, {SDIST} (reason: broken on Windows)\n"
    for name in (WHEEL, SDIST):  # no record yet: each got one first, then the yank
        record = record_of(bucket, name)
        assert record is not None and record["yanked"] is True and record["yank_reason"] == "broken on Windows"
        assert record["sha256"] == sha256(files[name])  # type: ignore[arg-type]
    assert record_of(bucket, "demo-2.0.tar.gz") is None and record_of(bucket, "other-1.0.tar.gz") is None
    assert {name: bucket.get(name) for name in packages(bucket)} == files
    assert object_versions(env) == versions  # the package objects were not rewritten
    # One entry per file whose record changed: running instances read those records again.
    assert sorted(bucket.feed_since(feed)) == sorted([("r", SDIST), ("r", WHEEL)])
    feed = bucket.feed_names()

    unyank = run_cli(env, "unyank", "DEMO", "1.0")  # any spelling PEP 503 normalises alike
    assert unyank.code == 0, unyank.out + unyank.err
    assert unyank.out == f"unyanked DEMO 1.0: {WHEEL}, {SDIST}\n"
    for name in (WHEEL, SDIST):
        record = record_of(bucket, name)
        assert record is not None and record["yanked"] is False and record["yank_reason"] is None
    assert object_versions(env) == versions
    assert {name: bucket.get(name) for name in packages(bucket)} == files
    assert sorted(bucket.feed_since(feed)) == sorted([("r", SDIST), ("r", WHEEL)])


def test_yank_of_a_release_the_bucket_does_not_have_exits_1_and_changes_nothing(
    bucket: BucketProbe, tmp_path: Path, run_cli
) -> None:
    bucket.put(SDIST, sdist_bytes("demo", "1.0", ">=3.8"))
    env = env_for(bucket, tmp_path / "server-folder")
    before = snapshot(bucket)
    for argv in (("yank", "demo", "9.9"), ("yank", "nothing", "1.0", "--reason", "x"), ("unyank", "demo", "1.0.0")):
        run = run_cli(env, *argv)
        assert run.code == 1, run.out
        assert f"error: no files of {argv[1]} {argv[2]} in the bucket" in run.err and "nothing changed" in run.err
        assert run.out == ""
    assert snapshot(bucket) == before


# -- push ------------------------------------------------------------------------------


def test_push_leaves_every_file_with_its_record_and_pushes_a_bad_one_anyway(
    bucket: BucketProbe, tmp_path: Path, run_cli
) -> None:
    stock = tmp_path / "stock"
    stock.mkdir()
    wheel = wheel_bytes(tmp_path, "demo", "1.0", ">=3.9")
    files = {WHEEL: wheel, SDIST: sdist_bytes("demo", "1.0", ">=3.8"), "broken-1.0.tar.gz": b"not a tarball",
             "there-1.0.tar.gz": sdist_bytes("there", "1.0", ">=3.7")}
    for name, data in files.items():
        (stock / name).write_bytes(data)
    bucket.put("there-1.0.tar.gz", files["there-1.0.tar.gz"])  # the same bytes, put there by another tool
    env = env_for(bucket, tmp_path / "server-folder")

    run = run_cli(env, "push", str(stock))
    assert run.code == 0, run.out + run.err
    assert "3 uploaded" in run.out and "1 already there" in run.out and "records stored: 4" in run.out
    assert "bad files, pushed anyway with a record that notes the problem (served without metadata): 1\n" \
        "  broken-1.0.tar.gz: " in run.out
    assert packages(bucket) == set(files)
    for name, data in files.items():
        record = record_of(bucket, name)
        assert record is not None and record["sha256"] == sha256(data) and record["uploader"] is None
    assert record_of(bucket, WHEEL)["requires_python"] == ">=3.9"  # type: ignore[index]
    assert sha256(metadata_of(bucket, WHEEL) or b"") == record_of(bucket, WHEEL)["metadata_sha256"]  # type: ignore[index]
    assert record_of(bucket, "broken-1.0.tar.gz")["metadata_problem"]  # type: ignore[index]

    before = snapshot(bucket)
    again = run_cli(env, "push", str(stock))  # nothing new: no record rewritten, no feed entry
    assert again.code == 0, again.out
    assert "0 uploaded" in again.out and "4 already there" in again.out and "records stored" not in again.out
    assert snapshot(bucket) == before
    backfill = run_cli(env, "backfill")
    assert backfill.code == 0 and "0 records computed" in backfill.out and "4 already there" in backfill.out
