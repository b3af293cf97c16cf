"""PUSH_LOCAL_CHANGES never pushes a file still being written (issue 9, item 2), on
every driver: a file copied into the folder while syncs run is pushed only once it has
been still for SETTLE_SECONDS, and a file that grows after its push replaces its own
earlier push in the bucket, never the other way round."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from gcs_sync.drivers import FileStoreDriver
from gcs_sync.sync.client import StorageClient
from gcs_sync.sync.folder import PackageFolder
from gcs_sync.sync.settle import SETTLE_SECONDS
from testkit.buckets import BucketProbe

NAME = "copied-1.0.tar.gz"
DATA = os.urandom(300_000)
# The clients here settle sooner than the product's 5 s: the same rule, less waiting (a
# file is never settled when first seen in its current state, however short the time).
SETTLE = min(SETTLE_SECONDS, 0.5)


@pytest.fixture
def client(driver: FileStoreDriver, tmp_path: Path) -> StorageClient:
    return StorageClient(driver, PackageFolder(tmp_path / "packages"), sync_interval=1, lock_timeout=5,
                         push_local_changes=True, settle_seconds=SETTLE)


def test_a_file_copied_in_while_syncs_run_is_pushed_only_once_complete(
    client: StorageClient, bucket: BucketProbe
) -> None:
    target = client.folder.path / NAME
    with open(target, "wb") as copy:  # a copy under way, as cp or scp writes it
        copy.write(DATA[:100_000])
        copy.flush()
        client.sync()
        assert bucket.names() == set()
        copy.write(DATA[100_000:])
    client.sync()  # complete now, but it changed a moment ago
    assert bucket.names() == set()
    time.sleep(SETTLE + 0.2)  # the bound under test: settled only past it
    client.sync()
    assert bucket.get(NAME) == DATA
    assert target.read_bytes() == DATA


def test_a_file_that_grows_after_its_push_replaces_its_own_push_and_is_never_cut_back(
    client: StorageClient, bucket: BucketProbe
) -> None:
    target = client.folder.path / NAME
    target.write_bytes(DATA[:100_000])
    an_hour_ago = time.time() - 3600
    os.utime(target, (an_hour_ago, an_hour_ago))  # looked complete: a writer that paused for long
    client.sync()
    assert bucket.get(NAME) == DATA[:100_000]
    with open(target, "ab") as rest:
        rest.write(DATA[100_000:])
    client.sync()
    assert target.read_bytes() == DATA  # not replaced by the bucket's shorter copy
    time.sleep(SETTLE + 0.2)  # the bound under test: settled only past it
    client.sync()
    assert bucket.get(NAME) == DATA
    assert target.read_bytes() == DATA
    bucket.put(NAME, b"replaced in the bucket by another tool")
    client.sync()  # the bucket changed too: its copy wins, as before
    assert target.read_bytes() == b"replaced in the bucket by another tool"
