"""The long-lived state and index are kept out of the garbage collector's full scans
(gcs_sync/sync/heap.py): what a full collection would visit, with the GIL held, while
requests wait. What the scans cost is the scale benchmark's to show (bench/scale.py, the
latency window); here, that the objects are out of them and still freed when replaced."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Iterator

import pytest

from gcs_sync.sync import heap
from gcs_sync.sync.client import StorageClient
from gcs_sync.sync.folder import PackageFolder
from gcs_sync.sync.state import StateFile, TrackedState
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


@pytest.mark.parametrize("bucket", ["local"], indirect=True)  # no bucket behaviour here
def test_a_synced_state_and_its_index_leave_the_scans_and_are_freed_when_replaced(
        client: StorageClient, bucket: BucketProbe, folder: PackageFolder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "LARGE", 3)  # 3 files stand for 5,000
    for k in range(3):
        bucket.put(f"demo-1.0.{k}.tar.gz", b"demo %d" % k)
    client.sync()  # a full listing
    assert gc.get_freeze_count() > 0
    tracked = TrackedState(StateFile(folder.control, client.driver.url))
    state = tracked.current()
    assert len(state) == 3 and not any(in_collector_scans(entry) for entry in state.values())

    gc.unfreeze()
    index = PackageIndex(folder, tracked, "sha256")
    index.refresh()  # a whole build: what it holds per file (its listing) leaves the scans
    assert not in_collector_scans(index._listing.entries)
    assert not any(in_collector_scans(names) for names in index._listing.names_by_project.values())
    built = index.get("demo-1.0.0.tar.gz")  # a project's files, built when asked for (a bounded few)
    assert built is not None and not in_collector_scans(built.record)

    # Replaced: frozen objects are still freed by reference counting, not kept forever.
    del built, state
    frozen = gc.get_freeze_count()
    bucket.delete("demo-1.0.0.tar.gz")
    client.sync()
    index.refresh()
    tracked.current()
    assert index.get("demo-1.0.0.tar.gz") is None and gc.get_freeze_count() < frozen


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
