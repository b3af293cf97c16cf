"""The on-demand package-file cache (``PACKAGE_FILES=cache``): a local folder of files
fetched from the bucket on their first request, bounded in size, least recently used first out.

Layout of the cache folder (``<LOCAL_PACKAGE_DIRECTORY>/.gcs_sync/cache``), shared by the
workers of an instance (and by any process given the same folder):

- ``<sha256>``: a cached file, named by the digest of its bytes, so a file replaced under the
  same name is never served stale. Its modification time is when it was fetched (the
  ``Last-Modified`` it is served with); its access time is when it was last served, set
  explicitly on every hit (``os.utime``, O(1), whatever the mount's atime policy): eviction
  goes by it, oldest first.
- ``.<sha256>.<size>.<random>.part``: a fetch in flight, with the size it reserved. It is
  renamed to ``<sha256>`` once the whole file is in and its sha256 matches; a mismatch or a
  broken stream deletes it.
- ``.locks/<sha256>.lock``: the per-file lock the fetch of that file holds (an ``flock``,
  released by the kernel if its holder dies); a concurrent first request for the file
  waits on it and is then served from the cache, so the bucket is read once. Its holder
  removes it as it lets go (path_lock.py says how that stays safe), so lock files exist
  only while fetches are under way, not one per file ever fetched; ones left by an earlier
  release or a killed process go when a cache is opened on the folder. (A process of an
  earlier release still at work on the same folder, with filelock before 3.24, could take
  the lock of a removed file: that file would then be fetched twice, the bound passed for
  a moment. Stop the old server before starting this one on a folder that persists.)
  ``.locks/space.lock`` serialises the reservations: scan the folder, evict, create the temp
  file. It stays (filelock).

The bound: a fetch reserves its file's whole size before its first byte, under the space
lock, counting every cached file and every live fetch at its reserved size, and evicting
least recently used files until it fits. So the folder's total size never exceeds
``max_bytes``, whatever the number of workers. A temp file whose writer died (its per-file
lock is free) is deleted at the next reservation. A file larger than the bound, or one that
cannot get room (other fetches in flight hold it), or whose lock is held too long, is
streamed through without being cached.

A ``Transfer`` is one read of a file from the bucket: chunks to the client and, when it
caches, into the temp file. It sends a chunk only once the next one is in hand, and the last
one only once the whole file's sha256 and size are checked, so a client never receives a
complete body of the wrong bytes: a file all in hand before its first byte (up to two
chunks) is checked before the answer starts (a mismatch is a 503); a longer one that breaks
off or does not match raises mid-stream (the server cuts the connection; Content-Length
tells the client the body is short). Either way nothing is left in the cache. A client that goes away
mid-stream does not stop a caching transfer: it reads the rest into the cache (the
requests waiting on its lock are then served from there) before it lets go.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Callable, ContextManager, Iterator, Optional

import filelock

from gcs_sync.errors import StorageError
from gcs_sync.files import TEMP_SUFFIX
from gcs_sync.sync.path_lock import RemovedOnRelease, remove_stale

log = logging.getLogger("gcs_sync.cache")

# What opens a file's bytes in the bucket (``FileStoreDriver.open_stream`` bound to its
# name and version, or a small note's bytes for a metadata file).
Source = Callable[[], ContextManager[Iterator[bytes]]]

_CACHED_NAME = re.compile(r"^[0-9a-f]{64}$")
_TEMP_NAME = re.compile(r"^\.(?P<sha256>[0-9a-f]{64})\.(?P<size>\d+)\.[0-9a-f]+" + re.escape(TEMP_SUFFIX) + "$")
LOCKS = ".locks"
_SPACE_LOCK = "space.lock"
# How long a request waits for another's fetch of the same file before it reads the bucket
# itself (streamed through, not cached): the holder streams at its client's pace.
DEFAULT_WAIT_SECONDS = 60.0


def folder_usage(directory: Path, max_bytes: int) -> dict[str, int]:
    """What a cache folder holds now: its bytes (cached files and fetches in flight), the
    number of cached files, and the bound. Reads only (``status`` asks it too)."""
    total, files = 0, 0
    with os.scandir(directory) as entries:
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
                    files += is_cached_name(entry.name)
            except FileNotFoundError:
                continue  # evicted or renamed while we looked
    return {"bytes": total, "files": files, "max_bytes": max_bytes}


def is_cached_name(name: str) -> bool:
    """Whether ``name`` in the cache folder is a cached file (not a fetch in flight or a lock)."""
    return _CACHED_NAME.match(name) is not None


@dataclasses.dataclass(frozen=True)
class Hit:
    """A cached file: its path, and when it was fetched (its ``Last-Modified``)."""

    path: Path
    size: int
    fetched: float


class FileCache:
    """The cache folder ``directory``, bounded to ``max_bytes`` (see the module docstring)."""

    def __init__(self, directory: Path, max_bytes: int, *, wait_seconds: float = DEFAULT_WAIT_SECONDS) -> None:
        self.directory = Path(directory).absolute()
        self.max_bytes = max_bytes
        self.wait_seconds = wait_seconds
        self._locks = self.directory / LOCKS
        self._locks.mkdir(parents=True, exist_ok=True)
        stale = remove_stale(self._locks, keep=frozenset({_SPACE_LOCK}))
        if stale:
            log.info("cache: removed %d lock files no fetch holds from %s", stale, self._locks)
        # Files said once (per process) to be too large to cache.
        self._said_too_large: set[str] = set()

    def __repr__(self) -> str:
        return f"FileCache({self.directory}, max_bytes={self.max_bytes})"

    def usage(self) -> dict[str, int]:
        """What the folder holds now (``folder_usage``)."""
        return folder_usage(self.directory, self.max_bytes)

    def lookup(self, sha256: str) -> Optional[Hit]:
        """The cached file with these bytes, marked as just used; None if it is not cached."""
        path = self.directory / sha256
        try:
            stat = os.stat(path)
            # The access time is the LRU clock; the modification time stays the fetch's.
            os.utime(path, ns=(time.time_ns(), stat.st_mtime_ns))
        except FileNotFoundError:
            return None  # not cached, or evicted just now
        return Hit(path, stat.st_size, stat.st_mtime)

    def fits(self, size: int) -> bool:
        return size <= self.max_bytes

    def say_too_large(self, filename: str, size: int) -> None:
        if filename not in self._said_too_large:
            self._said_too_large.add(filename)
            log.info("%s: %d bytes, more than the cache's bound (%d): served straight from the bucket, not cached",
                     filename, size, self.max_bytes)

    def file_lock(self, sha256: str) -> RemovedOnRelease:
        """The per-file lock of a fetch of these bytes (a new handle: each holder its own)."""
        return RemovedOnRelease(self._locks / f"{sha256}.lock")

    def reserve(self, sha256: str, size: int) -> Optional[Path]:
        """Room for a file of ``size`` bytes: evict least recently used files until it fits
        with every other file and fetch in flight, then create its temp file (which holds
        the reservation). None if it cannot fit (fetches in flight hold the room). The
        caller holds ``file_lock(sha256)``."""
        if not self.fits(size):
            return None
        with self._space_lock():
            cached: list[tuple[int, int, Path]] = []  # (last used, size, path)
            used = 0
            for entry in self._entries():
                try:
                    stat = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if _CACHED_NAME.match(entry.name):
                    cached.append((stat.st_atime_ns, stat.st_size, Path(entry.path)))
                    used += stat.st_size
                elif temp := _TEMP_NAME.match(entry.name):
                    if self._is_abandoned(temp["sha256"], sha256):
                        try:
                            Path(entry.path).unlink()
                            log.warning("cache: removed %s, left by a fetch that died", entry.name)
                        except FileNotFoundError:
                            pass  # its fetch failed and removed it just now
                    else:
                        used += max(stat.st_size, int(temp["size"]))
                else:
                    used += stat.st_size  # not ours, but it takes room all the same
            cached.sort()
            for _last_used, victim_size, victim in cached:
                if used + size <= self.max_bytes:
                    break
                victim.unlink(missing_ok=True)
                used -= victim_size
                log.info("cache: evicted %s (%d bytes, least recently used)", victim.name, victim_size)
            if used + size > self.max_bytes:
                return None
            temp_path = self.directory / f".{sha256}.{size}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
            temp_path.touch(exist_ok=False)
            return temp_path

    def commit(self, temp: Path, sha256: str) -> None:
        """Rename a whole, checked temp file into the cache. Under the space lock, as the
        reservations: a scan never sees a temp file vanish and its cached file not yet there."""
        with self._space_lock():
            os.replace(temp, self.directory / sha256)

    def _space_lock(self) -> filelock.BaseFileLock:
        return filelock.FileLock(str(self._locks / _SPACE_LOCK), thread_local=False)

    def _is_abandoned(self, temp_sha256: str, own_sha256: str) -> bool:
        """Whether the fetch that made a temp file of ``temp_sha256`` is over: its per-file
        lock is free (the kernel released it with its process), or it is the file whose
        lock the caller holds (then it is an earlier, dead fetch's)."""
        if temp_sha256 == own_sha256:
            return True
        probe = self.file_lock(temp_sha256)
        try:
            probe.acquire(timeout=0)
        except filelock.Timeout:
            return False
        probe.release()
        return True

    def _entries(self) -> list[os.DirEntry[str]]:
        with os.scandir(self.directory) as entries:
            return [entry for entry in entries if entry.is_file(follow_symlinks=False)]

    def transfer(self, filename: str, sha256: str, size: int, source: Source) -> "Transfer":
        """A transfer of the file ``filename`` (these bytes) from the bucket: cached on the way
        if it may be (it takes the file's lock, waiting for another fetch of it), else
        streamed through. Check ``Transfer.hit`` first: a wait may end with the file cached."""
        if not self.fits(size):
            self.say_too_large(filename, size)
            return Transfer(filename, sha256, size, source)
        lock = self.file_lock(sha256)
        try:
            lock.acquire(timeout=self.wait_seconds)
        except filelock.Timeout:
            log.warning("%s: another fetch of it took more than %.0f s; reading it from the bucket without caching",
                        filename, self.wait_seconds)
            return Transfer(filename, sha256, size, source)
        try:
            hit = self.lookup(sha256)
            temp = None if hit is not None else self.reserve(sha256, size)
        except OSError as exc:  # the cache folder failed (full, unwritable): serve all the same
            lock.release()
            log.warning("%s: cannot make room in the cache (%s); streamed without caching", filename, exc)
            return Transfer(filename, sha256, size, source)
        except BaseException:
            lock.release()
            raise
        if hit is None and temp is None:
            log.info("%s: no room in the cache now (fetches in flight hold it); streamed without caching", filename)
        if hit is not None or temp is None:
            lock.release()
        return Transfer(filename, sha256, size, source, hit=hit,
                        cache=(self, temp, lock) if temp is not None else None)


class Transfer:
    """One read of a file's bytes from the bucket (see the module docstring). ``hit`` is
    set instead when the file was cached while the transfer waited for its lock."""

    def __init__(
        self, filename: str, sha256: str, size: int, source: Source, *, hit: Optional[Hit] = None,
        cache: Optional[tuple[FileCache, Path, RemovedOnRelease]] = None,
    ) -> None:
        self.filename = filename
        self.sha256 = sha256
        self.size = size
        self.hit = hit
        self.started = time.time()
        self._source = source
        # Whether this transfer was given room in the cache (it may still fail to cache).
        self.caching = cache is not None
        self._cache: Optional[FileCache] = None
        self._temp: Optional[Path] = None
        self._lock: Optional[RemovedOnRelease] = None
        if cache is not None:
            self._cache, self._temp, self._lock = cache
        self._out: Optional[BinaryIO] = None
        self._stack = contextlib.ExitStack()
        self._chunks: Optional[Iterator[bytes]] = None
        self._digest = hashlib.sha256()
        self._read = 0
        self._first: Optional[bytes] = None
        self._second: Optional[bytes] = None
        self._finished = False
        self.cached = False

    def start(self) -> None:
        """Open the source and read the first two chunks: what the bucket says before the
        first byte is raised here (a StorageError), with everything let go. A file that is
        all in hand by then (most metadata files, small sdists) is checked here too, so a
        wrong one is a clear error rather than a short body."""
        try:
            if self._temp is not None:
                self._out = self._stack.enter_context(open(self._temp, "wb"))
            self._chunks = self._stack.enter_context(self._source())
            self._first = self._next()
            self._second = None if self._first is None else self._next()
            if self._second is None:
                self._finish()
        except BaseException:
            self.close()
            raise

    def chunks(self) -> Iterator[bytes]:
        """The file's bytes, for the response body (after ``start``). A chunk is sent once
        the next one is in hand, and the last one only once the whole file is checked (and
        cached): a mismatch or a break is never a complete body."""
        try:
            pending, following = self._first, self._second
            while pending is not None:
                if following is None and not self._finished:
                    self._finish()  # raises on a mismatch: the last chunk is never sent
                try:
                    yield pending
                except GeneratorExit:
                    if not self._finished and self.caching:
                        self._complete_quietly("the client went away")
                    raise
                pending = following
                following = None if pending is None or self._finished else self._next()
        except (StorageError, OSError) as exc:
            log.error("%s: stopped after %d of %d bytes read from the bucket; the client gets a short body "
                      "and nothing is cached: %s", self.filename, self._read, self.size, exc)
            raise
        finally:
            self.close()

    def complete(self) -> None:
        """Read the whole file into the cache without sending it (a Range request on a miss);
        raises as ``chunks`` does, with nothing cached."""
        try:
            self._read_rest()
        finally:
            self.close()

    def _read_rest(self) -> None:
        while not self._finished:
            if self._next() is None:
                self._finish()

    def _complete_quietly(self, why: str) -> None:
        try:
            self._read_rest()
        except (StorageError, OSError) as exc:
            log.error("%s: %s, and reading the rest into the cache failed; nothing cached: %s",
                      self.filename, why, exc)
            return
        log.info("%s: %s mid-stream; the rest was read into the cache", self.filename, why)

    def _next(self) -> Optional[bytes]:
        """The next chunk from the bucket (hashed, and written to the temp file), or None at
        the end; a file longer than its size is an error at once (the Content-Length sent
        would be a lie)."""
        assert self._chunks is not None
        chunk = next(self._chunks, b"")
        if not chunk:
            return None
        self._read += len(chunk)
        if self._read > self.size:
            raise StorageError("download", self.filename, f"longer than its {self.size} bytes")
        self._digest.update(chunk)
        if self._out is not None:
            try:
                self._out.write(chunk)
            except OSError as exc:
                # A full disk must not fail the download: the client still gets the bytes.
                log.warning("%s: cannot write it to the cache (%s); streamed without caching", self.filename, exc)
                self._drop_temp()
        return chunk

    def _finish(self) -> None:
        """The whole file is read: check it, then rename it into the cache."""
        self._finished = True
        if self._read != self.size:
            raise StorageError("download", self.filename, f"ended at {self._read} of {self.size} bytes")
        digest = self._digest.hexdigest()
        if digest != self.sha256:
            raise StorageError("download", self.filename,
                               f"its bytes have sha256 {digest}, not the {self.sha256} the index serves")
        if self._temp is not None and self._cache is not None and self._out is not None:
            try:
                self._out.close()
                seconds = int(self.started)  # the Last-Modified the first answer carried
                os.utime(self._temp, ns=(time.time_ns(), seconds * 1_000_000_000))
                self._cache.commit(self._temp, self.sha256)
                self.cached = True
            except OSError as exc:
                log.warning("%s: cannot move it into the cache (%s); served, not cached", self.filename, exc)
        self.close()  # others waiting on the lock are served from the cache meanwhile

    def _drop_temp(self) -> None:
        if self._out is not None:
            with contextlib.suppress(OSError):  # closing a file we give up on: nothing to save
                self._out.close()
            self._out = None
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)

    def close(self) -> None:
        """Let go of everything: the source, the temp file unless it became the cached file,
        the per-file lock. Idempotent."""
        try:
            self._stack.close()
        finally:
            if not self.cached:
                self._drop_temp()
            self._temp = None
            self._out = None
            if self._lock is not None:
                lock, self._lock = self._lock, None
                lock.release()

    def __enter__(self) -> "Transfer":
        return self

    def __exit__(self, kind: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()
