"""End to end: two gunicorn instances (two workers each, separate local folders) on one
bucket, real twine uploads, real pip and uv installs into throwaway venvs, on every driver."""

from __future__ import annotations

import concurrent.futures
import hashlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from testkit.buckets import BucketProbe
from testkit.packages import make_wheel
from testkit.servers import (
    REPO,
    Instance,
    clean_env,
    links,
    new_venv,
    pip_install,
    remove_form,
    start_instance,
    twine_upload,
    upload_form,
    uv_install,
    uv_publish,
)
from testkit.wait import eventually

pytestmark = pytest.mark.slow

SYNC_INTERVAL = 1.0
FULL_SYNC_INTERVAL = 2.0

StartInstance = Callable[..., Instance]


@pytest.fixture
def start(bucket: BucketProbe, tmp_path: Path, htpasswd: Path) -> Iterator[StartInstance]:
    started: list[Instance] = []

    def _start(name: str, **env: str) -> Instance:
        instance = start_instance(
            {**bucket.env(), "PASSWORD_FILE": str(htpasswd), "SYNC_INTERVAL": str(SYNC_INTERVAL),
             "FULL_SYNC_INTERVAL": str(FULL_SYNC_INTERVAL), **env},
            tmp_path / name, tmp_path,
        )
        started.append(instance)
        return instance

    yield _start
    for instance in started:
        instance.stop()


# README's bounds add the duration of one check, which runs in the background (reads
# are served the previous view meanwhile); on loopback it takes milliseconds, and this
# margin also covers a loaded machine.
CHECK_MARGIN = 2.0


def wait_past_interval() -> None:
    """Any request made after this sees every change made through the index before it
    (README: the bound, SYNC_INTERVAL plus one check). The bound is under test: a sleep."""
    time.sleep(SYNC_INTERVAL + CHECK_MARGIN)


def wait_past_full_listing() -> None:
    """Any request made after this sees every change made straight in the bucket before it.
    The bound is under test: a sleep."""
    time.sleep(FULL_SYNC_INTERVAL + CHECK_MARGIN)


def test_twine_upload_to_a_is_in_the_bucket_and_installs_from_b_with_pip_and_uv(
    start: StartInstance, bucket: BucketProbe, tmp_path: Path
) -> None:
    a, b = start("a"), start("b")
    wheel = make_wheel(tmp_path / "dist", "hello-private", "1.2.0", value="from the bucket")
    b.get("/simple/")  # B has a fresh, empty view before the upload
    uploaded = twine_upload(a.url, wheel)
    assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
    assert bucket.get(wheel.name) == wheel.read_bytes()
    wait_past_interval()
    assert wheel.name in links(b, "hello-private")  # the first request after the interval
    python = new_venv(tmp_path / "venv-pip")
    installed = pip_install(python, b.url + "/simple/", "hello-private==1.2.0")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    probe = subprocess.run([str(python), "-c", "import hello_private; print(hello_private.VALUE)"],
                           capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "from the bucket"
    python = new_venv(tmp_path / "venv-uv")
    installed = uv_install(python, b.url + "/simple/", "hello-private==1.2.0", tmp_path / "uv-cache")
    assert installed.returncode == 0, installed.stdout + installed.stderr


def test_uv_publish_stores_in_the_bucket(start: StartInstance, bucket: BucketProbe, tmp_path: Path) -> None:
    a = start("a")
    wheel = make_wheel(tmp_path / "dist", "published-with-uv", "0.1")
    published = uv_publish(a.url, wheel)
    assert published.returncode == 0, published.stdout + published.stderr
    assert bucket.get(wheel.name) == wheel.read_bytes()
    assert wheel.name in links(a, "published-with-uv")


def test_same_filename_through_b_is_refused_by_the_bucket(
    start: StartInstance, bucket: BucketProbe, tmp_path: Path
) -> None:
    a = start("a")
    b = start("b", SYNC_INTERVAL="3600", FULL_SYNC_INTERVAL="3600")  # B will not learn of A's upload by syncing
    b.get("/simple/")
    first = make_wheel(tmp_path / "one", "clash", "1.0", value="first")
    second = make_wheel(tmp_path / "two", "clash", "1.0", value="second")
    assert twine_upload(a.url, first).returncode == 0
    assert not (b.folder / second.name).exists()
    refused = twine_upload(b.url, second)
    assert refused.returncode != 0
    assert "400" in refused.stdout + refused.stderr  # stock pypiserver answers twine with 400
    status, text = upload_form(b.url, second.name, second.read_bytes())
    assert status == 409 and "already exists" in text
    assert bucket.get(first.name) == first.read_bytes()
    assert [p.name for p in b.folder.iterdir() if p.name.endswith(".part")] == []


def test_removal_through_b_leaves_the_bucket_and_a(start: StartInstance, bucket: BucketProbe, tmp_path: Path) -> None:
    a, b = start("a"), start("b")
    keep = make_wheel(tmp_path / "dist", "gone", "1.0")
    drop = make_wheel(tmp_path / "dist", "gone", "2.0")
    assert twine_upload(a.url, keep, drop).returncode == 0
    assert set(links(a, "gone")) == {keep.name, drop.name}
    wait_past_interval()
    assert remove_form(b.url, "gone", "2.0")[0] == 200
    assert bucket.names() == {keep.name}
    wait_past_interval()
    assert set(links(a, "gone")) == {keep.name}
    assert a.get(f"/packages/{drop.name}")[0] == 404


def test_changes_made_straight_in_the_bucket_are_served(start: StartInstance, bucket: BucketProbe) -> None:
    a = start("a")
    assert a.get("/simple/")[0] == 200
    bucket.put("direct-1.0.tar.gz", b"copied in by another tool")
    bucket.put("direct-2.0.tar.gz", b"another")
    wait_past_full_listing()
    assert a.get("/packages/direct-1.0.tar.gz") == (200, b"copied in by another tool")
    bucket.delete("direct-1.0.tar.gz")
    wait_past_full_listing()
    assert set(links(a, "direct")) == {"direct-2.0.tar.gz"}
    assert a.get("/packages/direct-1.0.tar.gz")[0] == 404


def test_a_cold_instance_serves_the_whole_bucket_on_its_first_request(
    start: StartInstance, bucket: BucketProbe
) -> None:
    names = {f"cold{i}-1.0.tar.gz" for i in range(5)}
    for name in names:
        bucket.put(name, name.encode())
    c = start("cold")
    status, body = c.get("/simple/")
    assert status == 200
    assert all(f"cold{i}/" in body.decode() for i in range(5))
    assert c.get("/packages/cold3-1.0.tar.gz") == (200, b"cold3-1.0.tar.gz")


def test_a_new_instance_fills_its_folder_before_any_request(start: StartInstance, bucket: BucketProbe) -> None:
    names = {f"warm{i}-1.0.tar.gz" for i in range(5)}
    for name in names:
        bucket.put(name, name.encode())
    c = start("warm")  # only /health has been asked, and it never syncs

    def filled_and_ready() -> bool:
        # The files are in place before the sync ends (it still records the listing and
        # expires old feed entries), and its lines are logged once it has.
        return {p.name for p in c.folder.glob("*.tar.gz")} == names and "ready: " in c.log()

    eventually(filled_and_ready, 20)
    assert {p.name for p in c.folder.glob("*.tar.gz")} == names
    assert "ready: " in c.log() and "cold start: 5 files" in c.log()


def test_a_failed_bucket_write_is_a_5xx_to_twine_and_is_listed_nowhere(
    start: StartInstance, bucket: BucketProbe, tmp_path: Path
) -> None:
    a = start("a")
    a.get("/simple/")
    bucket.remove_bucket()
    wheel = make_wheel(tmp_path / "dist", "lost", "1.0")
    failed = twine_upload(a.url, wheel)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0 and "503" in output and wheel.name in output
    assert a.get("/simple/lost/")[0] == 404
    assert [p.name for p in a.folder.iterdir() if p.name != ".gcs_sync"] == []
    assert wheel.name in a.log() and "failed" in a.log()


def test_workers_sharing_a_folder_serve_only_whole_files(
    start: StartInstance, bucket: BucketProbe, tmp_path: Path
) -> None:
    a, b = start("a"), start("b")
    wheels = [make_wheel(tmp_path / "dist", f"many{i}", "1.0", value="x" * 200_000 + str(i)) for i in range(10)]

    def read_b(_: int) -> list[tuple[str, str, bytes]]:
        seen = []
        for project in (f"many{i}" for i in range(10)):
            for filename, digest in links(b, project).items():
                status, body = b.get(f"/packages/{filename}")
                if status == 200:
                    seen.append((filename, digest, body))
        return seen

    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        uploads = [pool.submit(upload_form, a.url, w.name, w.read_bytes()) for w in wheels]
        reads = [pool.submit(read_b, i) for i in range(4)]
        assert [u.result()[0] for u in uploads] == [200] * 10
        observed = [item for r in reads for item in r.result()]
    built = {w.name: hashlib.sha256(w.read_bytes()).hexdigest() for w in wheels}
    for filename, digest, body in observed:  # whatever B served mid-flight was whole
        assert hashlib.sha256(body).hexdigest() == digest == built[filename]
    wait_past_interval()
    for instance in (a, b):
        for w in wheels:
            assert instance.get(f"/packages/{w.name}") == (200, w.read_bytes())
        assert [p.name for p in instance.folder.iterdir() if p.name.endswith(".part")] == []
    assert bucket.names() == {w.name for w in wheels}


@pytest.mark.parametrize("bucket", ["local"], indirect=True)
def test_bad_configuration_stops_gunicorn_with_the_variable_named(bucket: BucketProbe, tmp_path: Path) -> None:
    env = clean_env({**bucket.env(), "SYNC_INTERVAL": "soon", "LOCAL_PACKAGE_DIRECTORY": str(tmp_path / "p")})
    # Checked once in the master (gunicorn.conf.py's on_starting): one line, not one per
    # worker, and never gunicorn's HaltServer traceback (which came in about half the starts).
    for _ in range(4):
        result = subprocess.run(
            [sys.executable, "-m", "gunicorn", "main:get_app()", "--chdir", str(REPO), "-b", "127.0.0.1:0",
             "-w", "3"],
            env=env, capture_output=True, text=True, timeout=60,
        )
        assert result.returncode != 0
        errors = [line for line in result.stderr.splitlines() if "configuration error" in line]
        assert errors == ["gcs_sync configuration error: SYNC_INTERVAL: could not convert string to float: "
                          "'soon' (got 'soon')"], result.stderr
        assert "Traceback" not in result.stderr and "HaltServer" not in result.stderr, result.stderr
        # Besides gunicorn's own "Starting gunicorn" line, nothing else.
        assert len(result.stderr.splitlines()) <= 2, result.stderr
