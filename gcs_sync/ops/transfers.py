"""The I/O helpers push and verify share: work on many files at a time, and the sha256
of a bucket object's bytes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from gcs_sync.drivers.base import FileStoreDriver, RemoteObject
from gcs_sync.files import sha256_of, temp_name

# Called with each file's bytes as it is done, for a progress bar.
Advance = Callable[[int], None]
T = TypeVar("T")
R = TypeVar("R")


def no_progress(_: int) -> None:
    pass


def parallel(work: Callable[[T], R], items: Iterable[T], concurrency: int) -> list[R]:
    """``work`` on every item, ``concurrency`` at a time, results in the items' order."""
    items = list(items)
    if concurrency <= 1 or len(items) <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(concurrency, thread_name_prefix="gcs-sync-cli") as pool:
        return list(pool.map(work, items))


def sha256_by_download(driver: FileStoreDriver, remote: RemoteObject, scratch: Path) -> str:
    """The sha256 of the object's bytes, downloaded (at the listed version) to a
    temporary file in ``scratch`` that is removed at once."""
    temp = scratch / temp_name(remote.name)
    try:
        driver.download(remote.name, temp, remote.version)
        # Hashed here rather than trusting the driver's answer, which may come from metadata.
        return sha256_of(temp)
    finally:
        temp.unlink(missing_ok=True)
