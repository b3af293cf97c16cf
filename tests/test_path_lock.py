"""The cache's per-file lock (gcs_sync/sync/path_lock.py): exclusive across processes and
threads although its holder removes its file on every release."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import filelock
import pytest

from gcs_sync.sync.path_lock import RemovedOnRelease, remove_stale

ROOT = Path(__file__).resolve().parent.parent

# One process's turns: take the lock, read the count, wait a moment, write it plus one.
# Two holders at once would lose counts.
_TURNS = """
import sys, time
from pathlib import Path
from gcs_sync.sync.path_lock import RemovedOnRelease
lock_path, count_path, turns = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
for _ in range(turns):
    lock = RemovedOnRelease(lock_path)
    lock.acquire(timeout=60)
    try:
        count = int(count_path.read_text())
        time.sleep(0.0005)
        count_path.write_text(str(count + 1))
    finally:
        lock.release()
"""


def test_processes_taking_turns_never_hold_it_at_once_though_each_removes_the_file(tmp_path: Path) -> None:
    lock_path, count_path = tmp_path / "f.lock", tmp_path / "count"
    count_path.write_text("0")
    processes = [subprocess.Popen([sys.executable, "-c", _TURNS, str(lock_path), str(count_path), "150"], cwd=ROOT)
                 for _ in range(4)]
    for process in processes:
        assert process.wait(timeout=120) == 0
    assert count_path.read_text() == "600"
    assert not lock_path.exists()


def test_threads_taking_turns_never_hold_it_at_once(tmp_path: Path) -> None:
    lock_path = tmp_path / "f.lock"
    inside: list[int] = []
    most = [0]

    def turns() -> None:
        for _ in range(200):
            with RemovedOnRelease(lock_path):
                inside.append(1)
                most[0] = max(most[0], len(inside))
                time.sleep(0.0001)
                inside.pop()

    threads = [threading.Thread(target=turns) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 1 and not lock_path.exists()


def test_a_waiter_on_a_removed_file_takes_the_lock_on_the_file_the_path_names(tmp_path: Path) -> None:
    lock_path = tmp_path / "f.lock"
    first = RemovedOnRelease(lock_path)
    first.acquire(timeout=0)
    with pytest.raises(filelock.Timeout):
        RemovedOnRelease(lock_path).acquire(timeout=0.2)
    got: list[RemovedOnRelease] = []
    waiter = threading.Thread(target=lambda: got.append(_acquired(lock_path)))
    waiter.start()
    time.sleep(0.2)  # it waits on the file that is about to be removed
    first.release()
    waiter.join(timeout=10)
    assert got and got[0].is_locked
    held = os.stat(lock_path)  # the file it holds is the one the path names
    with pytest.raises(filelock.Timeout):
        RemovedOnRelease(lock_path).acquire(timeout=0)
    got[0].release()
    assert not lock_path.exists() and held.st_nlink == 1


def _acquired(path: Path) -> RemovedOnRelease:
    lock = RemovedOnRelease(path)
    lock.acquire(timeout=10)
    return lock


def test_stale_lock_files_are_removed_but_held_and_kept_ones_stay(tmp_path: Path) -> None:
    for name in ("a.lock", "b.lock", "space.lock", "other.txt"):
        (tmp_path / name).touch()
    held = filelock.FileLock(str(tmp_path / "b.lock"), thread_local=False)  # a process of the earlier release
    held.acquire()
    try:
        assert remove_stale(tmp_path, keep=frozenset({"space.lock"})) == 1
    finally:
        held.release()
    assert sorted(os.listdir(tmp_path)) == ["b.lock", "other.txt", "space.lock"]


def test_a_waiter_that_opened_the_file_before_its_holder_removed_it_starts_over(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one interleaving that makes removing lock files unsafe, made to happen: the
    waiter has the file open when its holder removes it and lets go, so the waiter's lock
    succeeds on a file no path names. It must not count as holding the lock (a third
    process would lock a new file at the path and both would go on): it starts over."""
    import fcntl

    from gcs_sync.sync import path_lock

    lock_path = tmp_path / "f.lock"
    holder = RemovedOnRelease(lock_path)
    holder.acquire(timeout=0)
    real_flock = fcntl.flock
    tries: list[int] = []

    def holder_lets_go_first(fd: int, operation: int) -> None:
        if not tries:
            holder.release()  # removes the file the waiter has open, then lets go of it
        tries.append(fd)
        real_flock(fd, operation)

    monkeypatch.setattr(path_lock.fcntl, "flock", holder_lets_go_first)
    waiter = RemovedOnRelease(lock_path)
    waiter.acquire(timeout=5)
    monkeypatch.undo()
    assert len(tries) == 2  # the removed file, then the one the path names
    with pytest.raises(filelock.Timeout):
        RemovedOnRelease(lock_path).acquire(timeout=0)  # the path's file is the waiter's
    waiter.release()
    assert not lock_path.exists()


def test_its_folder_removed_meanwhile_is_made_again(tmp_path: Path) -> None:
    lock_path = tmp_path / "locks" / "f.lock"
    lock_path.parent.mkdir()
    RemovedOnRelease(lock_path).acquire(timeout=0)  # (left held: a handle never released)
    for leftover in lock_path.parent.iterdir():
        leftover.unlink()
    lock_path.parent.rmdir()  # by hand, or a /tmp cleaner
    lock = RemovedOnRelease(lock_path)
    lock.acquire(timeout=0)
    lock.release()
    assert lock_path.parent.is_dir() and not lock_path.exists()


def test_a_failure_once_locked_lets_go_of_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gcs_sync.sync import path_lock

    lock_path = tmp_path / "f.lock"

    def fstat_fails(fd: int) -> os.stat_result:
        raise OSError(5, "input/output error")

    monkeypatch.setattr(path_lock.os, "fstat", fstat_fails)
    with pytest.raises(OSError, match="input/output"):
        RemovedOnRelease(lock_path).acquire(timeout=0)
    monkeypatch.undo()
    lock = RemovedOnRelease(lock_path)
    lock.acquire(timeout=0)  # not left held by the failed try
    lock.release()


def test_its_holder_removes_only_the_file_it_locked(tmp_path: Path) -> None:
    """The file removed by hand while held, and another made and locked at the path since:
    the first holder's release leaves that one alone."""
    lock_path = tmp_path / "f.lock"
    first = RemovedOnRelease(lock_path)
    first.acquire(timeout=0)
    lock_path.unlink()
    second = RemovedOnRelease(lock_path)
    second.acquire(timeout=0)
    first.release()
    assert lock_path.exists()
    with pytest.raises(filelock.Timeout):
        RemovedOnRelease(lock_path).acquire(timeout=0)
    second.release()
    assert not lock_path.exists()


def test_a_lock_file_that_cannot_be_opened_is_left_and_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "dir.lock").mkdir()  # not a file: cannot be opened for writing
    (tmp_path / "stale.lock").touch()
    assert remove_stale(tmp_path) == 1
    assert sorted(os.listdir(tmp_path)) == ["dir.lock"] and "dir.lock" in caplog.text
