"""A worker killed with SIGKILL in the middle of a transfer, under real gunicorn: no partial
file is ever visible, the folder lock does not outlive the worker (it is an flock, which
the kernel releases with the process), and the next worker's sync repairs the state.

A latency proxy in front of the GCS emulator (testkit/fault_proxy.py) stretches each
transfer so the kill lands in the middle of one.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from testkit.packages import make_sdist
from testkit.buckets import BucketProbe
from testkit.fault_proxy import Delay, FaultProxy
from testkit.servers import Instance, links, start_instance, upload_form
from testkit.wait import eventually

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("bucket", ["gcs"], indirect=True)]

DEADLINE = 60


def worker_pids(instance: Instance) -> list[int]:
    """The master's children but the listing process (gunicorn.conf.py's when_ready)."""
    master = instance.process.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    lister = re.search(r"started the listing process \(pid (\d+)\)", instance.log())
    return [int(pid) for pid in children if lister is None or int(pid) != int(lister.group(1))]


def visible(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}


def wait_for(condition, what: str) -> None:
    if not eventually(condition, DEADLINE):
        raise AssertionError(f"not within {DEADLINE}s: {what}")


@pytest.fixture
def slow_bucket(bucket: BucketProbe, gcs_emulator: str):
    host, port = gcs_emulator.removeprefix("http://").split(":")
    with FaultProxy(host, int(port)) as proxy:
        yield bucket, proxy


def test_a_worker_killed_mid_cold_start_leaves_nothing_partial_and_the_next_one_finishes(
    slow_bucket, tmp_path: Path
) -> None:
    bucket, proxy = slow_bucket
    contents = {f"crash{i}-1.0.tar.gz": os.urandom(30_000 + i) for i in range(40)}
    for name, data in contents.items():
        bucket.put(name, data)
    proxy.latency = 0.1
    folder = tmp_path / "served"
    instance = start_instance({**bucket.env(), "STORAGE_EMULATOR_HOST": proxy.url, "SYNC_CONCURRENCY": "2"},
                              folder, tmp_path, workers=1)
    try:
        wait_for(lambda: len(visible(folder)) >= 5, "the cold start has begun")
        (victim,) = worker_pids(instance)
        os.kill(victim, signal.SIGKILL)
        for name, data in visible(folder).items():  # whatever is visible is whole
            assert data == contents[name], name
        wait_for(lambda: worker_pids(instance) and worker_pids(instance) != [victim], "a new worker")
        wait_for(lambda: len(visible(folder)) == len(contents), "the new worker finishes the cold start")
        assert visible(folder) == contents
        listed = {}
        for project in {name.split("-")[0] for name in contents}:
            listed.update(links(instance, project))
        assert listed == {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
    finally:
        instance.stop()


def test_a_worker_killed_mid_upload_never_answers_200_and_shows_nothing_partial(
    slow_bucket, tmp_path: Path, htpasswd: Path
) -> None:
    bucket, proxy = slow_bucket
    folder = tmp_path / "served"
    # FULL_SYNC_PROCESS off: the rule below takes the first write for the upload's, and a
    # listing process's catalog snapshot is a write too (tests/test_lister.py covers it).
    instance = start_instance({**bucket.env(), "STORAGE_EMULATOR_HOST": proxy.url, "PASSWORD_FILE": str(htpasswd),
                               "SYNC_INTERVAL": "1", "FULL_SYNC_INTERVAL": "2", "FULL_SYNC_PROCESS": "false"},
                              folder, tmp_path, workers=1)
    try:
        assert instance.get("/simple/")[0] == 200
        # The cold start's listing is followed by the bucket's first catalog snapshot, a
        # write the rule below would take for the upload's: let it land first.
        wait_for(lambda: any(name.startswith(".gcs_sync/snapshots/") for name in bucket.all_names()),
                 "the first catalog snapshot was written")
        rule = proxy.add_rule("POST", r"/upload/", Delay(3))  # the bucket upload hangs for a while
        data = make_sdist(tmp_path / "dist", "killed", "1.0", filler=os.urandom(200_000)).read_bytes()  # opened
        outcome: dict[str, object] = {}

        def upload() -> None:
            try:
                outcome["status"] = upload_form(instance.url, "killed-1.0.tar.gz", data)[0]
            except OSError as exc:  # the connection dies with the worker
                outcome["error"] = exc

        client = threading.Thread(target=upload)
        client.start()
        wait_for(lambda: rule.hits == 1, "the upload reached the bucket")
        (victim,) = worker_pids(instance)
        os.kill(victim, signal.SIGKILL)
        client.join(timeout=DEADLINE)
        assert outcome.get("status") != 200
        assert "killed-1.0.tar.gz" not in visible(folder)
        proxy.clear_rules()
        wait_for(lambda: worker_pids(instance) and worker_pids(instance) != [victim], "a new worker")
        # The hung upload was forwarded after its delay: it may have landed.
        eventually(lambda: proxy.in_flight == 0, DEADLINE)
        stored = bucket.get("killed-1.0.tar.gz")
        assert stored in (None, data)  # all or nothing in the bucket
        # A write that landed after its worker died was never announced (no feed entry): the
        # folder follows the bucket at the next full listing, and the same upload is accepted.
        time.sleep(2.5)  # past FULL_SYNC_INTERVAL: the bound under test, so a sleep
        assert instance.get("/simple/")[0] == 200
        assert ("killed-1.0.tar.gz" in visible(folder)) == (stored is not None)
        assert upload_form(instance.url, "killed-1.0.tar.gz", data)[0] == 200
        assert bucket.get("killed-1.0.tar.gz") == data
        assert instance.get("/packages/killed-1.0.tar.gz") == (200, data)
    finally:
        instance.stop()


def test_a_worker_killed_mid_push_leaves_the_bucket_whole_and_the_next_sync_finishes(
    slow_bucket, tmp_path: Path
) -> None:
    bucket, proxy = slow_bucket
    folder = tmp_path / "served"
    folder.mkdir()
    contents = {f"pushed{i}-1.0.tar.gz": os.urandom(20_000 + i) for i in range(30)}
    an_hour_ago = time.time() - 3600
    for name, data in contents.items():  # an existing pypiserver folder, pushed by the dev tier
        (folder / name).write_bytes(data)
        os.utime(folder / name, (an_hour_ago, an_hour_ago))  # complete long ago: pushed at once
    proxy.latency = 0.1
    instance = start_instance({**bucket.env(), "STORAGE_EMULATOR_HOST": proxy.url, "TIER": "dev",
                               "PUSH_LOCAL_CHANGES": "true", "SYNC_CONCURRENCY": "2"}, folder, tmp_path, workers=1)
    try:
        wait_for(lambda: len(bucket.names()) >= 4, "the push has begun")
        (victim,) = worker_pids(instance)
        os.kill(victim, signal.SIGKILL)
        for name in bucket.names():
            assert bucket.get(name) == contents[name], name  # every stored object is whole
        wait_for(lambda: bucket.names() == set(contents), "the next worker finishes the push")
        assert {name: bucket.get(name) for name in contents} == contents
        assert visible(folder) == contents
    finally:
        instance.stop()
