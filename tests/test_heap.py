"""The long-lived state and index are kept out of the garbage collector's full scans
(gcs_sync/sync/heap.py): what a full collection would visit, with the GIL held, while
requests wait. What the scans cost is the scale benchmark's to show (bench/scale.py, the
latency window); here, that the objects are out of them and still freed when replaced."""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import Iterator

import pytest

from gcs_sync.sync import heap
from gcs_sync.sync.client import StorageClient
from gcs_sync.sync.folder import PackageFolder
from gcs_sync.sync.state import StateFile
from gcs_sync.sync.tracked import TrackedState
from gcs_sync.web.index import PackageIndex
from testkit.buckets import BucketProbe



@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    """Each test starts and ends with nothing frozen, as a fresh process does."""
    gc.unfreeze()
    yield
    gc.unfreeze()


@pytest.fixture
def folder(tmp_path: Path) -> PackageFolder:
    return PackageFolder(tmp_path / "packages")


@pytest.fixture
def client(driver, folder: PackageFolder) -> StorageClient:
    return StorageClient(driver, folder, sync_interval=1, lock_timeout=5)


def in_collector_scans(obj: object) -> bool:
    return any(o is obj for o in gc.get_objects())


def tracked_objects(*roots: object) -> int:
    """How many objects the collector tracks among those reachable from ``roots`` (not
    through a class: that would be every module)."""
    seen: set[int] = set()
    waiting = list(roots)
    while waiting:
        obj = waiting.pop()
        if id(obj) in seen or not gc.is_tracked(obj) or isinstance(obj, type):
            continue
        seen.add(id(obj))
        waiting.extend(gc.get_referents(obj))
    return len(seen)


def test_pauses_nest_and_restore_the_collector_as_it_was() -> None:
    assert gc.isenabled()
    with heap.collector_paused():
        with heap.collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer build is still under way
    assert gc.isenabled()
    gc.disable()  # switched off by the application: left off
    try:
        with heap.collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_small_build_is_left_to_the_collector() -> None:
    entry = [object()]
    heap.keep_long_lived(heap.LARGE - 1)
    assert gc.get_freeze_count() == 0 and in_collector_scans(entry)


def test_a_worker_holds_the_state_and_its_index_in_a_few_objects_whatever_the_number_of_files(
        client: StorageClient, bucket: BucketProbe, folder: PackageFolder) -> None:
    """Every worker holds every entry: packed (gcs_sync/sync/tracked.py), so the state and
    the index are a few objects in all, not a few per file, and a full collection visits
    none per file (as objects, 50,000 entries took it 45 ms); replaced, they are freed."""
    files = 200
    for k in range(files):
        bucket.put(f"demo-1.0.{k}.tar.gz", b"demo %d" % k)
    client.sync()  # a full listing
    tracked = TrackedState(StateFile(folder.control, client.driver.url))
    index = PackageIndex(folder, tracked, "sha256")
    index.refresh()  # a whole read of the state, and a whole build of the index
    held = tracked_objects(tracked._base, tracked._changes, tracked._log, index._listing)
    assert len(index) == files and held < files / 4, held
    assert index.get("demo-1.0.7.tar.gz") is not None  # (one project built when asked for)

    packed = tracked._base
    bucket.delete("demo-1.0.0.tar.gz")
    client.sync()
    state = StateFile(folder.control, client.driver.url)
    state.save(state.load())  # a new snapshot, not a compaction: read whole again
    index.refresh()
    assert index.get("demo-1.0.0.tar.gz") is None and len(index) == files - 1
    assert tracked._base is not packed and sys.getrefcount(packed) == 2  # held by this test alone


def heap_is_glibc() -> bool:
    import platform

    return platform.libc_ver()[0] == "glibc"


_LARGE_BLOCKS_IN_A_THREAD = """
import sys, threading
from gcs_sync.sync import heap

def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024

if sys.argv[1] == "promptly":
    heap.return_large_blocks_promptly()
kept = []

def cold_start_like():
    big = bytearray(20 * 1024 * 1024)  # a snapshot's text, freed: glibc would map only larger blocks now
    del big
    blocks = []
    for _ in range(60):  # a parse's buffers, between small objects that stay
        blocks.append(bytearray(1024 * 1024))
        kept.append(bytearray(200))
    del blocks
    heap.release_free_memory()

before = rss_mb()
worker = threading.Thread(target=cold_start_like)
worker.start()
worker.join()
print(round(rss_mb() - before))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists() or not heap_is_glibc(), reason="glibc on Linux only")
def test_large_blocks_freed_in_a_thread_go_back_to_the_system() -> None:
    """What a worker's cold start (a background thread) frees is given back: with glibc's
    default, about a third of it stayed (30 MB of a worker at 50,000 files)."""
    import subprocess
    import sys

    def kept_mb(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", _LARGE_BLOCKS_IN_A_THREAD, mode], capture_output=True,
                              text=True, check=True, cwd=Path(__file__).parent.parent, timeout=60)
        return int(done.stdout.strip())

    assert kept_mb("default") >= 10  # the allocator's own way, for comparison: it keeps them
    assert kept_mb("promptly") <= 5
