"""The operator's package commands (``python -m gcs_sync status|pull|push|verify``) on
every backend, against the real storage servers: their output, exit codes, and what they
leave in the folder and the bucket. Most tests call ``cli.main`` in this process (the
same code path, faster); each command also runs once as a real ``python -m gcs_sync``."""

from __future__ import annotations

import datetime
import hashlib
import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Optional

import filelock
import pytest

from gcs_sync import cli
from gcs_sync.sync.state import StateFile
from testkit.buckets import BucketProbe
from testkit.fault_proxy import FaultProxy
from testkit.packages import make_sdist, make_wheel
from testkit.servers import REPO, clean_env, links, start_instance
from testkit.wait import eventually

from .test_app import App


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def env_for(bucket: BucketProbe, folder: Path, **extra: str) -> dict[str, str]:
    return {**bucket.env(), "LOCAL_PACKAGE_DIRECTORY": str(folder), **extra}


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> dict:
        return json.loads(self.out)


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):
    """``run_cli(env, *argv)``: the command line, in this process."""

    def run(env: dict[str, str], *argv: str) -> Run:
        capsys.readouterr()
        code = cli.main(list(argv), env)
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def run_cli_process(env: dict[str, str], *argv: str, timeout: float = 120) -> Run:
    """The command line as a user runs it: a new process (the emulators' endpoints and the
    fake credentials come from this process's environment, as a shell would pass them)."""
    done = subprocess.run([sys.executable, "-m", "gcs_sync", *argv], env=clean_env(env), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    return Run(done.returncode, done.stdout, done.stderr)


def folder_snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under the folder (its .gcs_sync/ state included), with mtime and bytes."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def bucket_snapshot(bucket: BucketProbe) -> tuple[dict[str, Optional[bytes]], list[str]]:
    """Every object with its bytes, and the change feed's entries."""
    return {name: bucket.get(name) for name in bucket.names()}, bucket.feed_names()


def package_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


def fill(bucket: BucketProbe, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        bucket.put(name, data)


THREE = {"keep-1.0.tar.gz": b"kept", "change-1.0.tar.gz": b"before", "gone-1.0.tar.gz": b"to be deleted"}


def pulled_three(bucket: BucketProbe, folder: Path, run_cli) -> dict[str, str]:
    """THREE in the bucket and pulled into ``folder``; the command line's environment for them."""
    env = env_for(bucket, folder)
    fill(bucket, THREE)
    assert run_cli(env, "pull").code == 0
    return env


# -- status ----------------------------------------------------------------------------


def test_status_reports_each_kind_of_difference_and_changes_nothing(
    bucket: BucketProbe, tmp_path: Path, run_cli
) -> None:
    folder = tmp_path / "packages"
    env = pulled_three(bucket, folder, run_cli)
    agreed = run_cli(env, "status", "--json")
    assert agreed.code == 0, agreed.out + agreed.err
    report = agreed.json()
    assert report["in_sync"] is True and report["same"] == 3 and report["last_error"] is None
    assert report["lag_seconds"] >= 0
    assert datetime.datetime.fromisoformat(report["last_sync"]).tzinfo is not None  # as /ready reports it

    bucket.put("new-1.0.tar.gz", b"added in the bucket")
    bucket.put("change-1.0.tar.gz", b"after, and longer")
    bucket.delete("gone-1.0.tar.gz")
    (folder / "mine-1.0.tar.gz").write_bytes(b"only here")
    StateFile(folder / ".gcs_sync", f"{report['bucket']}").record_failure("sync from the bucket failed: boom")
    before = folder_snapshot(folder), bucket_snapshot(bucket)

    differs = run_cli(env, "status", "--json")
    assert differs.code == 1
    report = differs.json()
    assert report["in_sync"] is False and report["same"] == 1
    assert report["only_in_bucket"] == [{"name": "new-1.0.tar.gz", "size": len(b"added in the bucket")}]
    assert report["removed_from_bucket"] == ["gone-1.0.tar.gz"]
    assert report["only_here"] == ["mine-1.0.tar.gz"]
    assert [d["name"] for d in report["different"]] == ["change-1.0.tar.gz"]
    assert "boom" in report["last_error"]["error"]
    assert datetime.datetime.fromisoformat(report["last_error"]["at"]).tzinfo is not None

    text = run_cli(env, "status")
    assert text.code == 1
    assert "only in the bucket (a pull downloads them): 1\n  new-1.0.tar.gz" in text.out
    assert "removed from the bucket since the last sync (a pull removes them here): 1\n  gone-1.0.tar.gz" in text.out
    assert "only here, never in the bucket (a pull leaves them; push uploads them): 1\n  mine-1.0.tar.gz" in text.out
    assert "different (a pull replaces them with the bucket's): 1\n  change-1.0.tar.gz: " in text.out
    assert "last error: sync from the bucket failed: boom" in text.out
    assert (folder_snapshot(folder), bucket_snapshot(bucket)) == before


@pytest.mark.slow
def test_status_as_a_process_on_a_folder_that_does_not_exist_yet(bucket: BucketProbe, tmp_path: Path) -> None:
    folder = tmp_path / "not-yet"
    fill(bucket, {"one-1.0.tar.gz": b"1"})
    run = run_cli_process(env_for(bucket, folder), "status")
    assert run.code == 1, run.err
    assert "(does not exist yet)" in run.out and "only in the bucket (a pull downloads them): 1" in run.out
    assert "last sync: never" in run.out
    assert not folder.exists() and bucket.all_names() == {"one-1.0.tar.gz"}  # nothing created anywhere


# -- pull ------------------------------------------------------------------------------


@pytest.mark.slow
def test_pull_into_an_empty_folder_makes_it_identical_and_writes_nothing_to_the_bucket(
    bucket: BucketProbe, tmp_path: Path
) -> None:
    folder = tmp_path / "packages"
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    files = {**THREE, wheel.name: wheel.read_bytes(), "empty-1.0.tar.gz": b""}
    fill(bucket, {**files, "README.txt": b"not a package"})
    before = bucket_snapshot(bucket)
    env = env_for(bucket, folder)

    run = run_cli_process(env, "pull")
    assert run.code == 0, run.err
    assert run.out.startswith("pulled 5 files") and "removed 0, 0 failed" in run.out
    assert "skipped 1 bucket objects that are not package filenames: README.txt" in run.out
    assert package_files(folder) == files
    assert bucket_snapshot(bucket) == before  # not even a change-feed entry was written
    status = run_cli_process(env, "status", "--json")
    assert status.code == 0 and status.json()["same"] == 5


def test_pull_removes_a_file_the_bucket_lost_and_leaves_local_only_files_alone(
    bucket: BucketProbe, tmp_path: Path, run_cli
) -> None:
    folder = tmp_path / "packages"
    env = pulled_three(bucket, folder, run_cli)
    bucket.delete("gone-1.0.tar.gz")
    (folder / "mine-1.0.tar.gz").write_bytes(b"only here")
    before = bucket_snapshot(bucket)

    run = run_cli(env, "pull")
    assert run.code == 0
    assert "pulled 0 files" in run.out and "removed 1, 0 failed" in run.out
    assert "left alone: 1 files here are not in the bucket (push uploads them): mine-1.0.tar.gz" in run.out
    assert package_files(folder) == {"keep-1.0.tar.gz": b"kept", "change-1.0.tar.gz": b"before",
                                     "mine-1.0.tar.gz": b"only here"}
    assert bucket_snapshot(bucket) == before


def test_pull_names_the_files_it_could_not_place_and_exits_1(bucket: BucketProbe, tmp_path: Path, run_cli) -> None:
    folder = tmp_path / "packages"
    fill(bucket, {"fine-1.0.tar.gz": b"fine", "blocked-1.0.tar.gz": b"blocked"})
    (folder / "blocked-1.0.tar.gz").mkdir(parents=True)  # a folder where the file must go
    run = run_cli(env_for(bucket, folder), "pull")
    assert run.code == 1
    assert "1 failed" in run.out and "  failed: blocked-1.0.tar.gz: " in run.out
    assert (folder / "fine-1.0.tar.gz").read_bytes() == b"fine"


def test_pull_under_a_running_server_updates_what_it_serves(
    bucket: BucketProbe, tmp_path: Path, htpasswd: Path, run_cli
) -> None:
    folder = tmp_path / "packages"
    app = App(bucket, folder, htpasswd, SYNC_INTERVAL=3600)
    assert app.http.get("/simple/").status_code == 200  # the server's view is now fresh for an hour
    bucket.put("late-1.0.tar.gz", b"late")
    assert app.http.get("/simple/late/").status_code == 404
    assert run_cli(env_for(bucket, folder), "pull").code == 0
    page = app.http.get("/simple/late/")
    assert page.status_code == 200 and f"late-1.0.tar.gz#sha256={sha256(b'late')}" in page.get_data(as_text=True)


@pytest.mark.slow
@pytest.mark.parametrize("bucket", ["local"], indirect=True)  # the lock is the folder's, whatever the bucket
def test_pull_waits_for_the_folder_lock_of_a_running_sync_and_gives_up_after_wait(
    bucket: BucketProbe, tmp_path: Path
) -> None:
    folder = tmp_path / "packages"
    fill(bucket, {"one-1.0.tar.gz": b"1"})
    (folder / ".gcs_sync").mkdir(parents=True)
    with filelock.FileLock(str(folder / ".gcs_sync" / "lock")):  # as a server's sync holds it
        run = run_cli_process(env_for(bucket, folder), "pull", "--wait", "0.5")
    assert run.code == 1 and "lock" in run.err and "--wait" in run.err
    assert package_files(folder) == {}
    assert run_cli_process(env_for(bucket, folder), "pull", "--wait", "0.5").code == 0
    assert package_files(folder) == {"one-1.0.tar.gz": b"1"}


@pytest.mark.slow
@pytest.mark.parametrize("bucket", ["s3"], indirect=True)
def test_ctrl_c_stops_a_pull_after_the_transfers_in_flight_and_keeps_what_was_done(
    bucket: BucketProbe, tmp_path: Path, s3_server: str
) -> None:
    # S3 only: the proxy's latency must slow every download, and moto serves them through it.
    folder = tmp_path / "packages"
    files = {f"slow-{i}.0.tar.gz": f"file {i}".encode() for i in range(30)}
    fill(bucket, files)
    host, port = s3_server.removeprefix("http://").split(":")
    with FaultProxy(host, int(port)) as proxy:
        proxy.latency = 0.3  # 30 files, 2 at a time: several seconds in all
        env = env_for(bucket, folder, AWS_ENDPOINT_URL=proxy.url, SYNC_CONCURRENCY="2")
        process = subprocess.Popen([sys.executable, "-m", "gcs_sync", "pull"], env=clean_env(env), cwd=REPO,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            eventually(lambda: folder.is_dir() and bool(package_files(folder)), 60)  # the first file is in place
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 130, err
    pulled = package_files(folder)
    assert 0 < len(pulled) < len(files)
    assert f"interrupted: {len(files) - len(pulled)} changes left for the next pull" in err
    assert all(files[name] == data for name, data in pulled.items())
    env = env_for(bucket, folder)
    status = run_cli_process(env, "status", "--json").json()
    assert status["same"] == len(pulled) and len(status["only_in_bucket"]) == len(files) - len(pulled)
    assert run_cli_process(env, "pull").code == 0 and package_files(folder) == files


# -- push ------------------------------------------------------------------------------


@pytest.fixture
def stock_folder(tmp_path: Path, bucket: BucketProbe) -> dict[str, bytes]:
    """A stock pypiserver folder at tmp_path/stock, against a bucket that already has one
    of its files (same bytes, no sha256 metadata: another tool put it there) and another
    name with other content. Returns the package files of the folder."""
    stock = tmp_path / "stock"
    wheel = make_wheel(stock, "demo", "1.0")
    (stock / "demo-1.0.tar.gz").write_bytes(b"the sdist")
    (stock / "same-1.0.tar.gz").write_bytes(b"already there")
    (stock / "clash-1.0.tar.gz").write_bytes(b"ours")
    (stock / "README.txt").write_text("not a package")
    (stock / "old").mkdir()
    (stock / "old" / "older-0.1.tar.gz").write_bytes(b"in a sub-folder")
    bucket.put("same-1.0.tar.gz", b"already there")
    bucket.put("clash-1.0.tar.gz", b"theirs")
    return {wheel.name: wheel.read_bytes(), "demo-1.0.tar.gz": b"the sdist", "same-1.0.tar.gz": b"already there",
            "clash-1.0.tar.gz": b"ours"}


@pytest.mark.slow
def test_push_of_a_stock_folder_uploads_what_the_bucket_lacks_and_reports_the_conflict(
    bucket: BucketProbe, tmp_path: Path, stock_folder: dict[str, bytes], run_cli
) -> None:
    stock = tmp_path / "stock"
    env = env_for(bucket, tmp_path / "server-folder")
    feed_before = bucket.feed_names()

    run = run_cli_process(env, "push", str(stock))
    assert run.code == 1, run.err
    new = [name for name in stock_folder if name.startswith("demo")]
    assert "2 uploaded, 0 overwritten" in run.out and "1 already there, 1 conflicts, 0 failed, 2 skipped" in run.out
    assert "conflicts, left alone (--overwrite replaces them): 1\n  clash-1.0.tar.gz: the bucket has other content" \
        in run.out
    assert "README.txt: not a package filename" in run.out and "old/: a folder" in run.out
    assert "records stored: 3" in run.out  # the two uploaded, and the one already there (none for the conflict)
    assert "bad files, pushed anyway with a record that notes the problem" in run.out  # b"the sdist"
    assert bucket.names() == {*stock_folder}
    assert {name for name in bucket.record_names() if name.startswith(".gcs_sync/records/")} == {
        f".gcs_sync/records/{name}" for name in stock_folder if name != "clash-1.0.tar.gz"}
    for name in new:
        assert bucket.get(name) == stock_folder[name]
        if bucket.backend != "local":  # a folder keeps no metadata
            assert bucket.sha256_metadata(name) == sha256(stock_folder[name])
    assert bucket.get("clash-1.0.tar.gz") == b"theirs"  # not overwritten
    # Running instances are told of each file whose bytes or record are new: the two
    # uploaded, and the one already there that got its record.
    assert sorted(bucket.feed_since(feed_before)) == [
        ("a", name) for name in sorted(name for name in stock_folder if name != "clash-1.0.tar.gz")]
    assert "change feed written: running instances take the new files at their next check" in run.out
    assert not (stock / ".gcs_sync").exists()  # any folder will do: it is not made a synced one

    feed = bucket.feed_names()
    again = run_cli(env, "push", str(stock))  # idempotent: nothing new, so no feed entry
    assert again.code == 1 and "0 uploaded" in again.out and "3 already there, 1 conflicts" in again.out
    assert bucket.feed_names() == feed and "change feed written" not in again.out

    forced = run_cli(env, "push", str(stock), "--overwrite")
    assert forced.code == 0, forced.out
    assert "0 uploaded, 1 overwritten" in forced.out and "overwritten (--overwrite): 1\n  clash-1.0.tar.gz" in forced.out
    assert {name: bucket.get(name) for name in bucket.names()} == stock_folder
    assert ".gcs_sync/records/clash-1.0.tar.gz" in bucket.record_names()
    assert bucket.feed_since(feed) == [("a", "clash-1.0.tar.gz")]


def test_push_dry_run_writes_nothing(
    bucket: BucketProbe, tmp_path: Path, stock_folder: dict[str, bytes], run_cli
) -> None:
    stock = tmp_path / "stock"
    before = bucket_snapshot(bucket), folder_snapshot(stock)
    run = run_cli(env_for(bucket, tmp_path / "server-folder"), "push", str(stock), "--dry-run", "--overwrite")
    assert run.code == 0, run.out
    assert run.out.startswith("dry run, nothing written: ")
    assert "2 would be uploaded, 1 would be overwritten" in run.out
    assert "would be uploaded: 2\n  demo-1.0-py3-none-any.whl\n  demo-1.0.tar.gz" in run.out
    assert (bucket_snapshot(bucket), folder_snapshot(stock)) == before


@pytest.mark.slow
def test_push_defaults_to_the_servers_folder_and_running_instances_serve_the_files(
    bucket: BucketProbe, tmp_path: Path
) -> None:
    folder = tmp_path / "packages"
    first = make_wheel(folder, "demo", "1.0")
    env = env_for(bucket, folder)
    assert run_cli_process(env, "push").code == 0
    # No full listings during the test: only the change feed can tell the instance.
    server_env = {**bucket.env(), "SYNC_INTERVAL": "1", "FULL_SYNC_INTERVAL": "3600"}
    instance = start_instance(server_env, tmp_path / "instance", tmp_path)
    try:
        assert links(instance, "demo") == {first.name: sha256(first.read_bytes())}
        second = make_wheel(folder, "demo", "2.0")
        run = run_cli_process(env, "push")
        assert run.code == 0, run.out + run.err
        assert "1 uploaded" in run.out and "1 already there" in run.out and "change feed written" in run.out
        both = {first.name: sha256(first.read_bytes()), second.name: sha256(second.read_bytes())}
        # The freshness bound for a change in the feed: SYNC_INTERVAL plus one check.
        assert eventually(lambda: links(instance, "demo") == both, 1.0 + 2.0)
        assert instance.get(f"/packages/{second.name}") == (200, second.read_bytes())
    finally:
        instance.stop()


# -- verify ----------------------------------------------------------------------------


@pytest.mark.slow
def test_verify_finds_corrupt_local_files_changed_objects_and_missing_files_on_each_side(
    bucket: BucketProbe, tmp_path: Path, run_cli
) -> None:
    folder = tmp_path / "packages"
    env = pulled_three(bucket, folder, run_cli)
    before = bucket_snapshot(bucket), folder_snapshot(folder)

    ok = run_cli_process(env, "verify")
    assert ok.code == 0, ok.out + ok.err
    assert "3 of 3 match" in ok.out and ok.out.rstrip().endswith("ok: every file matches")
    # Put there without sha256 metadata: each one was downloaded and hashed.
    assert "downloaded and hashed: 3 bucket objects had no sha256 metadata" in ok.out

    (folder / "keep-1.0.tar.gz").write_bytes(b"corrupted")
    corrupt = run_cli(env, "verify")
    assert corrupt.code == 1
    assert f"mismatch (sha256 here, in the bucket): 1\n  keep-1.0.tar.gz: {sha256(b'corrupted')} != " \
           f"{sha256(b'kept')}" in corrupt.out
    (folder / "keep-1.0.tar.gz").write_bytes(b"kept")

    bucket.put("change-1.0.tar.gz", b"after")
    bucket.put("new-1.0.tar.gz", b"new")
    (folder / "mine-1.0.tar.gz").write_bytes(b"mine")
    changed = run_cli(env, "verify")
    assert changed.code == 1
    assert "mismatch (sha256 here, in the bucket): 1\n  change-1.0.tar.gz: " in changed.out
    assert "missing from the bucket: 1\n  mine-1.0.tar.gz" in changed.out
    assert "missing here (in the bucket only): 1\n  new-1.0.tar.gz" in changed.out
    assert bucket.get("change-1.0.tar.gz") == b"after" and (folder / "change-1.0.tar.gz").read_bytes() == b"before"
    assert before[1][".gcs_sync/state.json"] == folder_snapshot(folder)[".gcs_sync/state.json"]


def test_verify_trusts_sha256_metadata_where_the_listing_has_it(
    bucket: BucketProbe, tmp_path: Path, run_cli
) -> None:
    stock = tmp_path / "stock"
    make_wheel(stock, "demo", "1.0")
    env = env_for(bucket, tmp_path / "server-folder")
    assert run_cli(env, "push", str(stock)).code == 0
    run = run_cli(env, "verify", str(stock))
    assert run.code == 0 and "1 of 1 match" in run.out
    # GCS lists each object's metadata; S3 and folder listings carry none.
    assert ("downloaded and hashed" in run.out) == (bucket.backend != "gcs")


# -- errors, flags, help ---------------------------------------------------------------


COMMANDS = ["status", "pull", "push", "verify"]


@pytest.mark.slow
def test_a_bucket_that_does_not_exist_is_exit_4_on_every_command(
    bucket: BucketProbe, tmp_path: Path, run_cli
) -> None:
    folder = tmp_path / "packages"
    folder.mkdir()
    if bucket.backend == "local":
        # A local bucket is a folder that the settings check: a missing one is a configuration error.
        env = env_for(bucket, folder, BUCKET_NAME=str(tmp_path / "no-such-bucket"))
        expected, message = 3, "error: configuration: BUCKET_NAME: "
    else:
        env = env_for(bucket, folder, BUCKET_NAME=f"no-such-{uuid.uuid4().hex[:8]}")
        expected, message = 4, "error: bucket: "
    for command in COMMANDS:
        run = run_cli(env, command)
        assert (run.code, run.out) == (expected, ""), command
        assert run.err.startswith(message) and "no-such-" in run.err, command
    run = run_cli_process(env, "status")
    assert run.code == expected and message in run.err and "Traceback" not in run.err


@pytest.mark.slow
def test_a_bad_flag_value_is_exit_3_naming_its_variable(bucket: BucketProbe, tmp_path: Path, run_cli) -> None:
    env = env_for(bucket, tmp_path / "packages")
    for command in COMMANDS:
        run = run_cli(env, command, "--concurrency", "0")
        assert run.code == 3, command
        assert run.err.startswith("error: configuration: SYNC_CONCURRENCY: "), command
    run = run_cli_process(env, "pull", "--timeout", "soon")
    assert run.code == 3 and "STORAGE_TIMEOUT" in run.err and "Traceback" not in run.err


@pytest.mark.parametrize("command", ["push", "verify"])
def test_a_folder_that_does_not_exist_is_exit_3_naming_it(
    bucket: BucketProbe, tmp_path: Path, run_cli, command: str
) -> None:
    missing = tmp_path / "no-such-folder"
    run = run_cli(env_for(bucket, tmp_path / "packages"), command, str(missing))
    assert run.code == 3 and run.err.startswith(f"error: configuration: FOLDER: {missing} ")
    run = run_cli(env_for(bucket, missing), command)
    assert run.code == 3 and run.err.startswith(f"error: configuration: LOCAL_PACKAGE_DIRECTORY: {missing} ")
    assert not missing.exists()


def test_flags_override_the_environment(bucket: BucketProbe, tmp_path: Path, run_cli) -> None:
    fill(bucket, {"one-1.0.tar.gz": b"1"})
    wrong_bucket = str(tmp_path / "wrong") if bucket.backend == "local" else "wrong-bucket-name"
    if bucket.backend == "local":
        (tmp_path / "wrong").mkdir()
    env = env_for(bucket, tmp_path / "env-folder", BUCKET_NAME=wrong_bucket, SYNC_CONCURRENCY="0")
    flags = ["--bucket", bucket.name, "--local-dir", str(tmp_path / "flag-folder"), "--concurrency", "4"]
    assert run_cli(env, "pull", *flags).code == 0
    assert package_files(tmp_path / "flag-folder") == {"one-1.0.tar.gz": b"1"}
    assert not (tmp_path / "env-folder").exists()
    assert run_cli(env, "status", *flags).code == 0
    assert run_cli(env, "verify", *flags).code == 0
    assert run_cli(env, "push", *flags).code == 0


@pytest.mark.parametrize("command, own_flags", [
    ("status", ["--json"]),
    ("pull", ["--progress", "--no-progress", "--wait"]),
    ("push", ["FOLDER", "--overwrite", "--dry-run", "--progress"]),
    ("verify", ["FOLDER", "--progress"]),
])
@pytest.mark.slow
def test_help_of_each_command_describes_it_and_lists_its_flags(command: str, own_flags: list[str]) -> None:
    run = run_cli_process({}, command, "--help")
    assert run.code == 0 and run.err == ""
    assert run.out.startswith(f"usage: python -m gcs_sync {command}")
    text = " ".join(run.out.split())  # argparse wraps lines where it likes
    for flag in [*own_flags, "--bucket", "--backend", "--local-dir", "--remote-dir", "--concurrency", "--timeout"]:
        assert flag in text, flag
    assert "[env BUCKET_NAME]" in text and "Exit 0" in text


@pytest.mark.slow
def test_progress_bar_goes_to_stderr_only_when_asked_or_on_a_terminal(
    bucket: BucketProbe, tmp_path: Path
) -> None:
    # A real sdist: a file that is not one gets a warning in the log ("no usable core metadata").
    fill(bucket, {"one-1.0.tar.gz": make_sdist(tmp_path / "dist", "one", "1.0", filler=b"1" * 5000).read_bytes()})
    quiet = run_cli_process(env_for(bucket, tmp_path / "a"), "pull")  # stderr is a pipe here
    assert quiet.code == 0 and quiet.err == ""
    shown = run_cli_process(env_for(bucket, tmp_path / "b"), "pull", "--progress")
    assert shown.code == 0 and "pull: " in shown.err and "pull: " not in shown.out
