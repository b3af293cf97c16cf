"""An exclusive lock on a file path whose lock file is removed when it is let go.

The cache (cache.py) locks each file it fetches, by the file's digest: a lock file per
file ever fetched would pile up (one inode each, kept in memory on a tmpfs such as App
Engine's /tmp). Removing a plain ``flock`` lock file is unsafe: a process waiting on the
removed inode would then lock it while another locks a new file at the same path, and
both would go on. So here a process that gets the lock checks that the path still names
the inode it locked, and starts over if not; and only the holder removes the file, just
before it lets go. At most one holder at a time has the lock on the inode the path names.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from pathlib import Path
from types import TracebackType
from typing import Optional

import filelock

log = logging.getLogger("gcs_sync.cache")  # the name operators' log queries know

_POLL_SECONDS = 0.05  # as filelock polls: flock has no timeout of its own
_FLAGS = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)


class RemovedOnRelease:
    """The lock on ``path`` (a new handle per holder, like ``filelock.FileLock(...,
    thread_local=False)``). ``acquire`` raises ``filelock.Timeout``, as filelock does."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: Optional[int] = None

    @property
    def is_locked(self) -> bool:
        return self._fd is not None

    def acquire(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds (0: one try) for the lock."""
        deadline = time.monotonic() + timeout
        while True:
            fd = self._open()
            try:
                locked = self._try_lock(fd)
                if locked and self._names(fd):
                    self._fd = fd
                    return
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
            if time.monotonic() >= deadline:
                raise filelock.Timeout(str(self.path))
            if locked:
                continue  # its holder removed it meanwhile: lock the file the path names now
            time.sleep(_POLL_SECONDS)

    def _open(self) -> int:
        try:
            return os.open(self.path, _FLAGS, 0o644)
        except FileNotFoundError:  # the lock folder was removed (by hand, a /tmp cleaner): made again
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, _FLAGS, 0o644)

    @staticmethod
    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False  # held
            raise
        return True

    def _names(self, fd: int) -> bool:
        """Whether the path still names the file ``fd`` has open."""
        try:
            at_path = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (at_path.st_dev, at_path.st_ino) == (held.st_dev, held.st_ino)

    def release(self) -> None:
        """Remove the lock file, then let go (a waiter on the removed file starts over).
        Does nothing if not held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._names(fd):  # (not if it was removed by hand, and another made since)
                self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)  # the kernel lets go of the lock with its last descriptor

    def __enter__(self) -> "RemovedOnRelease":
        self.acquire(timeout=float("inf"))
        return self

    def __exit__(self, kind: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.release()


def remove_stale(folder: Path, keep: frozenset[str] = frozenset()) -> int:
    """Remove the lock files in ``folder`` (but ``keep``) that no one holds: left by an
    earlier release, which never removed them, or by a process that died between
    creating one and locking it. A held one stays. The number removed."""
    removed = 0
    with os.scandir(folder) as entries:
        names = [entry.name for entry in entries if entry.name.endswith(".lock") and entry.name not in keep]
    for name in names:
        lock = RemovedOnRelease(folder / name)
        try:
            lock.acquire(timeout=0)
            lock.release()
        except filelock.Timeout:
            continue  # held: a fetch under way
        except OSError as exc:  # one that cannot be opened (another owner, a link): never a reason not to start
            log.warning("could not remove the lock file %s: %s", folder / name, exc)
            continue
        removed += 1
    return removed
