"""The listing process (gcs_sync/sync/lister.py, gcs_sync/web/lister.py): the periodic full
listing made beside the workers instead of in them, so that no request waits for one; and
when it is gone, the workers list again. What it spares the requests is the scale
benchmark's to show (bench/scale.py, the latency window); here, who lists and what is
seen. The loop itself is backend-agnostic (it calls the client's sync): local buckets."""

from __future__ import annotations

import gc
import logging
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from gcs_sync.sync.client import StorageClient
from gcs_sync.sync.folder import PackageFolder
from gcs_sync.sync import heap
from gcs_sync.sync.lister import FullListingLoop, seconds_until_due, worth_a_process
from gcs_sync.sync.state import StateFile
from gcs_sync.drivers import make_driver
from testkit.buckets import BucketProbe
from testkit.servers import Instance, links, start_instance
from testkit.wait import eventually

from .conftest import settings_for

FULL_SYNC_INTERVAL = 4.0  # ahead of the workers by 2 s: room for a niced process on a loaded machine
SYNC_INTERVAL = 1.0
# One listing and the check that shows it, on a loaded machine.
MARGIN = 3.0


# -- when to list: a pure table ----------------------------------------------------------------

@pytest.mark.parametrize(("age", "since_own", "full", "sync", "due"), [
    (None, None, 60, 5, 0),  # no listing known: now
    (0, None, 60, 5, 54),  # the lock taken SYNC_INTERVAL and a second before a worker could
    (50, None, 60, 5, 4),
    (54, None, 60, 5, 0),
    (120, None, 60, 5, 0),  # overdue (a worker's cold start, a long outage): now
    (0, 0, 600, 5, 594),
    # however long its own listing took, a pause of SYNC_INTERVAL (at least 1 s) after it
    (58, 0, 60, 5, 5),
    (58, 6, 60, 5, 0),
    (3, 0.5, 4, 1, 0.5),
    (0, None, 2, 1, 0),  # intervals too short to lead (no process is started for them)
])
def test_when_the_next_listing_is_due(age: float | None, since_own: float | None, full: float, sync: float,
                                      due: float) -> None:
    assert seconds_until_due(age, since_own=since_own, full_sync_interval=full,
                             sync_interval=sync) == pytest.approx(due)


@pytest.mark.parametrize(("full", "sync", "worth"), [
    (60, 5, True), (10, 5, True), (9, 5, False), (2, 1, True), (1.5, 0, False), (0, 0, False), (4, 1, True),
])
def test_a_process_only_when_it_can_list_ahead_of_the_workers(full: float, sync: float, worth: bool) -> None:
    assert worth_a_process(full, sync) is worth


def test_the_master_does_not_fork_the_listing_process_while_a_thread_of_its_own_runs() -> None:
    """A fork copies the locks other threads hold, held for good in the child: gunicorn's
    master runs none, and the listing process is refused if it ever does (the workers then
    list themselves)."""
    from gcs_sync.web.lister import fork

    release = threading.Event()
    other = threading.Thread(target=release.wait, name="holding-a-lock", daemon=True)
    other.start()
    try:
        with pytest.raises(RuntimeError, match="holding-a-lock"):
            fork(os.getpid())
    finally:
        release.set()
        other.join(5)


# -- the loop, in this process ----------------------------------------------------------------

class Loop:
    """A FullListingLoop in a thread, whose "parent" lives until ``orphan``."""

    def __init__(self, client: StorageClient) -> None:
        self.parent = True
        self.stopping = threading.Event()
        self.loop = FullListingLoop(client, full_sync_interval=FULL_SYNC_INTERVAL, sync_interval=SYNC_INTERVAL,
                                    stopping=self.stopping, parent_alive=lambda: self.parent)
        self.thread = threading.Thread(target=self.loop.run, daemon=True)
        self.thread.start()

    def orphan(self) -> None:
        self.parent = False
        self.thread.join(5)


@pytest.fixture
def folder(tmp_path: Path) -> PackageFolder:
    return PackageFolder(tmp_path / "packages")


def new_client(driver, folder: PackageFolder) -> StorageClient:
    return StorageClient(driver, folder, sync_interval=SYNC_INTERVAL, full_sync_interval=FULL_SYNC_INTERVAL,
                         lock_timeout=5)


@pytest.fixture
def loop(bucket: BucketProbe, folder: PackageFolder, tmp_path: Path) -> Iterator[Loop]:
    # A driver of its own, as in its own process: the worker's calls are counted apart.
    running = Loop(new_client(make_driver(settings_for(bucket, tmp_path / "unused")), folder))
    yield running
    running.stopping.set()
    running.thread.join(5)


def synced_names(folder: PackageFolder, url: str) -> set[str]:
    return set(StateFile(folder.control, url).load())


@pytest.mark.parametrize("bucket", ["local"], indirect=True)
def test_the_loop_leaves_the_first_sync_to_the_workers_then_lists_what_other_tools_put_in_the_bucket(
        loop: Loop, driver, bucket: BucketProbe, folder: PackageFolder) -> None:
    bucket.put("early-1.0.tar.gz", b"early")
    time.sleep(FULL_SYNC_INTERVAL)
    assert loop.loop.listings == 0 and not folder.control.joinpath("listing.json").exists()

    worker = new_client(driver, folder)
    worker.sync()  # a worker's cold start
    bucket.put("late-1.0.tar.gz", b"late")  # straight into the bucket: only a listing sees it
    assert eventually(lambda: "late-1.0.tar.gz" in synced_names(folder, driver.url), FULL_SYNC_INTERVAL + MARGIN)
    assert loop.loop.listings >= 1
    # The worker, checking every SYNC_INTERVAL meanwhile, never finds a full listing due:
    # each check is one listing call, the change feed's.
    for _ in range(2 * int(FULL_SYNC_INTERVAL / SYNC_INTERVAL)):
        time.sleep(SYNC_INTERVAL)
        before = driver.calls["list"]
        worker.refresh_now()
        assert driver.calls["list"] - before <= 1

    loop.orphan()
    assert not loop.thread.is_alive()  # its parent is gone: so is it


@pytest.mark.parametrize("bucket", ["local"], indirect=True)
def test_a_failed_listing_is_said_and_tried_again(
        loop: Loop, driver, bucket: BucketProbe, folder: PackageFolder, caplog: pytest.LogCaptureFixture) -> None:
    new_client(driver, folder).sync()
    hidden = Path(bucket.name + ".away")
    shutil.move(bucket.name, hidden)  # the bucket is gone for a while
    with caplog.at_level(logging.WARNING, logger="gcs_sync.client"):
        assert eventually(lambda: "full listing by the listing process failed" in caplog.text,
                          FULL_SYNC_INTERVAL + MARGIN)
    assert bucket.name in caplog.text  # the failure names the bucket
    shutil.move(hidden, bucket.name)
    bucket.put("after-1.0.tar.gz", b"after")
    assert eventually(lambda: "after-1.0.tar.gz" in synced_names(folder, driver.url), FULL_SYNC_INTERVAL + MARGIN)
    assert loop.thread.is_alive()


@pytest.mark.parametrize("bucket", ["gcs"], indirect=True)  # its listings' blobs form cycles
def test_listing_after_listing_keeps_nothing_of_the_last(
        driver, bucket: BucketProbe, folder: PackageFolder, monkeypatch: pytest.MonkeyPatch) -> None:
    """The listing process's steps, again and again (a full listing, then its copy of the
    state dropped): what the collector must keep (frozen or not) does not grow, although
    each listing re-reads the whole state and freezes what it keeps (heap.LARGE lowered:
    60 files stand for 5,000)."""
    monkeypatch.setattr(heap, "LARGE", 50)
    for k in range(60):
        bucket.put(f"many-1.0.{k}.tar.gz", b"%d" % k)
    client = new_client(driver, folder)
    client.sync()
    kept = []
    try:
        for _ in range(5):
            client.sync()
            client.forget_state()
            gc.collect()
            kept.append(gc.get_freeze_count() + len(gc.get_objects()))
    finally:
        gc.unfreeze()
    assert max(kept[2:]) - kept[1] < 300, kept  # 600 more per listing (10 per file) when it kept them


# -- under gunicorn -----------------------------------------------------------------------------

def full_listers(log: str) -> set[int]:
    """The processes that logged a full listing."""
    return {int(pid) for pid in re.findall(r"\[(\d+)\] gcs_sync\.client: sync with .* \(full listing\)", log)}


def worker_pids(log: str) -> set[int]:
    return {int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", log)}


def lister_pid(instance: Instance) -> int:
    found = re.search(r"started the listing process \(pid (\d+)\)", instance.log())
    assert found, instance.log()
    return int(found.group(1))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is gone too.
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (ProcessLookupError, FileNotFoundError):  # reaped between the two looks
        return False
    return "\nState:\tZ" not in status


@pytest.fixture
def started(bucket: BucketProbe, tmp_path: Path) -> Iterator[list[Instance]]:
    instances: list[Instance] = []
    yield instances
    for instance in instances:
        instance.stop()


def start(bucket: BucketProbe, tmp_path: Path, started: list[Instance], **env: str) -> Instance:
    instance = start_instance({**bucket.env(), "SYNC_INTERVAL": str(SYNC_INTERVAL),
                               "FULL_SYNC_INTERVAL": str(FULL_SYNC_INTERVAL), **env}, tmp_path / "packages", tmp_path)
    started.append(instance)
    return instance


def put_straight_in_the_bucket_is_listed(instance: Instance, bucket: BucketProbe, filename: str) -> bool:
    """Whether a file put into the bucket by another tool is listed within a full listing
    (and the check that shows it, or the workers' own listing when they list)."""
    bucket.put(filename, f"{filename} put there by another tool".encode())
    return eventually(lambda: filename in links(instance, "outside"), FULL_SYNC_INTERVAL + SYNC_INTERVAL + MARGIN)


@pytest.mark.slow
@pytest.mark.parametrize("bucket", ["local"], indirect=True)
def test_under_gunicorn_the_listing_process_makes_the_full_listings_and_the_workers_take_over_without_it(
        bucket: BucketProbe, tmp_path: Path, started: list[Instance]) -> None:
    instance = start(bucket, tmp_path, started)
    lister = lister_pid(instance)
    assert put_straight_in_the_bucket_is_listed(instance, bucket, "outside-1.0.tar.gz")
    started_log = len(instance.log())  # after the workers' first sync (a full listing of theirs)
    time.sleep(3 * FULL_SYNC_INTERVAL)  # several listings' worth
    # Each made by a child of the listing process, one per listing; none by a worker.
    listers = full_listers(instance.log()[started_log:])
    assert len(listers) >= 2 and not listers & worker_pids(instance.log()) and lister not in listers, instance.log()

    os.kill(lister, signal.SIGKILL)
    assert eventually(lambda: not alive(lister), 5)
    assert put_straight_in_the_bucket_is_listed(instance, bucket, "outside-2.0.tar.gz")
    # The workers list again (a listing's log line follows the files it brought by a moment).
    assert eventually(lambda: full_listers(instance.log()[started_log:]) & worker_pids(instance.log()), 5), \
        instance.log()
    assert instance.process.poll() is None  # and the server goes on


@pytest.mark.slow
@pytest.mark.parametrize("bucket", ["local"], indirect=True)
def test_the_listing_process_ends_with_the_server_and_is_not_started_when_switched_off(
        bucket: BucketProbe, tmp_path: Path, started: list[Instance]) -> None:
    instance = start(bucket, tmp_path, started)
    lister = lister_pid(instance)
    assert alive(lister)
    instance.stop()  # gunicorn's quick shutdown
    assert eventually(lambda: not alive(lister), 10)

    instance = start(bucket, tmp_path, started)
    lister = lister_pid(instance)
    os.kill(instance.process.pid, signal.SIGKILL)  # no on_exit: the kernel tells it
    assert eventually(lambda: not alive(lister), 5)

    shutil.rmtree(tmp_path / "packages")
    instance = start(bucket, tmp_path, started, FULL_SYNC_PROCESS="false")
    assert put_straight_in_the_bucket_is_listed(instance, bucket, "outside-1.0.tar.gz")
    assert "listing process" not in instance.log()
    assert eventually(lambda: full_listers(instance.log()), 5), instance.log()  # the workers list
