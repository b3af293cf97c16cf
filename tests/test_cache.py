"""The on-demand package-file cache (PACKAGE_FILES=cache; gcs_sync/sync/cache.py and
gcs_sync/web/cached_download.py), served by the vendored bottle over a threaded WSGI server
(testkit/cache_server.py), reading real buckets (a folder, the GCS emulator, moto's S3),
through the fault proxy where a fault is needed. What a client sees: the bytes, the status
and headers; what the instance's disk holds: the cache folder, walked."""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

import pytest

from gcs_sync.drivers import FileStoreDriver, make_driver
from gcs_sync.drivers.base import Version
from gcs_sync.errors import StorageError
from gcs_sync.sync.cache import FileCache
from testkit.buckets import BucketProbe
from testkit.cache_server import CacheServer, Entry, make_app
from testkit.fault_proxy import FaultProxy, Respond, Truncate
from testkit.wait import eventually

from .conftest import settings_for

KIB = 1 << 10
MIB = 1 << 20
BUDGET = {"STORAGE_TIMEOUT": "2"}


def payload(name: str, size: int) -> bytes:
    """``size`` bytes of its own for each file, from the name."""
    block = hashlib.sha256(name.encode()).digest() * 64  # 2 KiB
    return (block * (size // len(block) + 1))[:size]


def put_files(bucket: BucketProbe, driver: FileStoreDriver, files: dict[str, bytes]) -> dict[str, Entry]:
    """Put ``files`` in the bucket; the index's view of them (digest, size, version)."""
    for name, data in files.items():
        bucket.put(name, data)
    listed = driver.list_objects()
    return {name: Entry(hashlib.sha256(data).hexdigest(), len(data), listed[name].version)
            for name, data in files.items()}


def get(url: str, headers: Optional[dict[str, str]] = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def get_partial(url: str) -> tuple[int, int, bytes]:
    """Status, declared length and the bytes received of a body that may end early."""
    host, port = url.removeprefix("http://").split("/", 1)[0].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("GET", "/" + url.removeprefix("http://").split("/", 1)[1])
        reply = connection.getresponse()
        declared = int(reply.getheader("Content-Length", "-1"))
        try:
            return reply.status, declared, reply.read()
        except http.client.IncompleteRead as cut:
            return reply.status, declared, cut.partial
    finally:
        connection.close()


def folder_bytes(folder: Path) -> int:
    """What the cache folder holds on disk, every file in it (temp files, locks) counted."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue  # evicted or renamed while we walked
    return total


def cached(folder: Path) -> set[str]:
    return {name for name in os.listdir(folder) if re.fullmatch(r"[0-9a-f]{64}", name)}


def leftovers(folder: Path) -> list[str]:
    return [name for name in os.listdir(folder) if name.startswith(".") and name != ".locks"]


class Sampler:
    """Walks the cache folder over and over while the test runs; the most it ever held."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.most = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.most = max(self.most, folder_bytes(self.folder))
            self.samples += 1

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture
def make_driver_for(bucket: BucketProbe, tmp_path: Path):
    """The driver, made when called: after the ``proxy`` fixture, if the test has it."""
    return lambda: make_driver(settings_for(bucket, tmp_path / "unused", **BUDGET))


def serve(cache: FileCache, driver: FileStoreDriver, catalog: dict[str, Entry], **kwargs: object) -> CacheServer:
    return CacheServer(make_app(cache, driver, catalog, **kwargs))  # type: ignore[arg-type]


# --- the bound ------------------------------------------------------------------------------


def test_a_bucket_several_times_the_bound_is_served_whole_and_the_folder_never_passes_it(
    bucket: BucketProbe, make_driver_for, tmp_path: Path
) -> None:
    driver = make_driver_for()
    files = {f"demo{i}-1.0-py3-none-any.whl": payload(f"demo{i}", 256 * KIB) for i in range(12)}
    catalog = put_files(bucket, driver, files)
    folder = tmp_path / "cache"
    cache = FileCache(folder, 1 * MIB)
    names = list(files)
    with serve(cache, driver, catalog) as server, Sampler(folder) as sampler:
        # Twice over every file, one at a time: each request leaves the folder within the bound.
        for name in names + names[::-1]:
            status, _headers, body = get(f"{server.url}/packages/{name}")
            assert status == 200 and body == files[name], name
            assert folder_bytes(folder) <= cache.max_bytes
        # Then all at once, 4 clients at a time, three rounds.
        errors: list[str] = []

        def client(offset: int) -> None:
            for name in (names[offset:] + names[:offset]) * 3:
                status, _headers, body = get(f"{server.url}/packages/{name}")
                if status != 200 or body != files[name]:
                    errors.append(f"{name}: {status}, {len(body)} bytes")

        threads = [threading.Thread(target=client, args=(offset,)) for offset in (0, 3, 6, 9)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
    assert sampler.samples > 10 and sampler.most <= cache.max_bytes
    assert folder_bytes(folder) <= cache.max_bytes and leftovers(folder) == []
    usage = cache.usage()
    assert usage["max_bytes"] == 1 * MIB and usage["bytes"] <= 1 * MIB and usage["files"] == len(cached(folder))
    # 12 files fetched again and again: no lock file stays for any (only the reservations' one).
    assert os.listdir(folder / ".locks") == ["space.lock"]


@pytest.mark.parametrize("bucket", ["local"], indirect=True)
def test_lock_files_an_earlier_release_left_go_when_a_cache_opens_the_folder_but_a_held_one_stays(
    bucket: BucketProbe, make_driver_for, tmp_path: Path
) -> None:
    """The release before kept one lock file per file ever fetched (an inode each: memory,
    on a tmpfs). A cache opened on the folder removes those no fetch holds."""
    import filelock

    folder = tmp_path / "cache"
    (folder / ".locks").mkdir(parents=True)
    for n in range(50):
        (folder / ".locks" / f"{n:064x}.lock").touch()
    held = filelock.FileLock(str(folder / ".locks" / f"{7:064x}.lock"), thread_local=False)
    held.acquire()  # a fetch under way in a process of the earlier release
    try:
        FileCache(folder, 1 * MIB)
        assert os.listdir(folder / ".locks") == [f"{7:064x}.lock"]
    finally:
        held.release()
    driver = make_driver_for()
    files = {"after-1.0.tar.gz": payload("after", 10 * KIB)}
    catalog = put_files(bucket, driver, files)
    with serve(FileCache(folder, 1 * MIB), driver, catalog) as server:
        assert get(f"{server.url}/packages/after-1.0.tar.gz")[2] == files["after-1.0.tar.gz"]
    assert os.listdir(folder / ".locks") == ["space.lock"]


def test_the_least_recently_used_file_goes_first_and_a_hit_reads_no_bucket(
    bucket: BucketProbe, make_driver_for, tmp_path: Path
) -> None:
    driver = make_driver_for()
    files = {f"lru{i}-1.0.tar.gz": payload(f"lru{i}", 256 * KIB) for i in range(5)}
    catalog = put_files(bucket, driver, files)
    folder = tmp_path / "cache"
    cache = FileCache(folder, 1 * MIB)  # room for four of them
    first, second, third, fourth, fifth = files
    with serve(cache, driver, catalog) as server:
        for name in (first, second, third, fourth):
            assert get(f"{server.url}/packages/{name}")[2] == files[name]
        reads = driver.calls["download"]
        assert get(f"{server.url}/packages/{first}")[2] == files[first]  # a hit: now the most recent
        assert driver.calls["download"] == reads
        assert get(f"{server.url}/packages/{fifth}")[2] == files[fifth]
        assert cached(folder) == {catalog[name].sha256 for name in (first, third, fourth, fifth)}
        assert get(f"{server.url}/packages/{second}")[2] == files[second]  # back, in the place of the third
        assert cached(folder) == {catalog[name].sha256 for name in (first, fourth, fifth, second)}


def test_a_file_larger_than_the_bound_is_streamed_through_never_cached_and_said_once(
    bucket: BucketProbe, make_driver_for, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    driver = make_driver_for()
    files = {"huge-1.0.tar.gz": payload("huge", 3 * MIB)}
    catalog = put_files(bucket, driver, files)
    folder = tmp_path / "cache"
    cache = FileCache(folder, 1 * MIB)
    with caplog.at_level(logging.INFO, logger="gcs_sync.cache"), serve(cache, driver, catalog) as server:
        with Sampler(folder) as sampler:
            for _ in range(2):
                status, headers, body = get(f"{server.url}/packages/huge-1.0.tar.gz")
                assert status == 200 and body == files["huge-1.0.tar.gz"]
                assert "Accept-Ranges" not in headers  # a Range would not be served from the cache
    assert sampler.most == 0 and cached(folder) == set()
    said = [r for r in caplog.records if "more than the cache's bound" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.INFO and "huge-1.0.tar.gz" in said[0].getMessage()


# --- one bucket read for concurrent first requests ------------------------------------------


@pytest.mark.parametrize("bucket", ["gcs", "s3"], indirect=True)
def test_concurrent_first_requests_read_the_bucket_once(
    bucket: BucketProbe, proxy: FaultProxy, make_driver_for, tmp_path: Path
) -> None:
    driver = make_driver_for()
    files = {"popular-1.0.tar.gz": payload("popular", 512 * KIB)}
    catalog = put_files(bucket, driver, files)
    cache = FileCache(tmp_path / "cache", 4 * MIB)
    proxy.latency = 0.3  # the bucket's round trip: the first fetch is still on its way when the others ask
    start = threading.Barrier(8)
    results: list[tuple[int, bytes]] = []

    def client() -> None:
        start.wait()
        status, _headers, body = get(f"{server.url}/packages/popular-1.0.tar.gz")
        results.append((status, body))

    with serve(cache, driver, catalog) as server:
        threads = [threading.Thread(target=client) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == [(200, files["popular-1.0.tar.gz"])] * 8
    reads = [path for method, path in proxy.requests if method == "GET" and "popular-1.0.tar.gz" in path]
    assert len(reads) == 1 and driver.calls["download"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("bucket", ["s3"], indirect=True)
def test_two_processes_sharing_the_folder_read_the_bucket_once(
    bucket: BucketProbe, proxy: FaultProxy, make_driver_for, tmp_path: Path
) -> None:
    driver = make_driver_for()
    files = {"shared-1.0.tar.gz": payload("shared", 512 * KIB)}
    catalog = put_files(bucket, driver, files)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"cache": str(tmp_path / "cache"), "max_bytes": 4 * MIB,
                                "files": {name: vars(entry) for name, entry in catalog.items()}}))
    env = {**os.environ, **bucket.env(), "AWS_ENDPOINT_URL": proxy.url, **BUDGET,
           "LOCAL_PACKAGE_DIRECTORY": str(tmp_path / "unused")}
    processes = [subprocess.Popen([sys.executable, "-m", "testkit.cache_server", str(spec)], env=env,
                                  stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent)
                 for _ in range(2)]
    try:
        urls = [process.stdout.readline().strip() for process in processes]  # type: ignore[union-attr]
        assert all(url.startswith("http://") for url in urls), urls
        proxy.latency = 0.3
        start = threading.Barrier(8)
        results: list[tuple[int, bytes]] = []

        def client(url: str) -> None:
            start.wait()
            status, _headers, body = get(f"{url}/packages/shared-1.0.tar.gz")
            results.append((status, body))

        threads = [threading.Thread(target=client, args=(urls[i % 2],)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=10)
    assert results == [(200, files["shared-1.0.tar.gz"])] * 8
    reads = [path for method, path in proxy.requests if method == "GET" and "shared-1.0.tar.gz" in path]
    assert len(reads) == 1


@pytest.mark.parametrize("bucket", ["local"], indirect=True)
def test_a_fetch_whose_process_died_frees_its_file_and_its_room(
    bucket: BucketProbe, make_driver_for, tmp_path: Path
) -> None:
    driver = make_driver_for()
    files = {"orphan-1.0.tar.gz": payload("orphan", 600 * KIB), "next-1.0.tar.gz": payload("next", 600 * KIB)}
    catalog = put_files(bucket, driver, files)
    folder = tmp_path / "cache"
    cache = FileCache(folder, 1 * MIB, wait_seconds=20)
    sha256 = catalog["orphan-1.0.tar.gz"].sha256
    # A worker that took the file's lock and reserved its room, then was killed mid-fetch.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import filelock, sys, time\n"
        f"filelock.FileLock({str(folder / '.locks' / (sha256 + '.lock'))!r}).acquire()\n"
        f"open({str(folder / ('.' + sha256 + '.614400.0abc.part'))!r}, 'wb').write(b'x' * 1000)\n"
        "print('holding', flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    finally:
        holder.kill()
        holder.wait(timeout=10)
    with serve(cache, driver, catalog) as server:
        # Another file needs the room the dead fetch reserved: it gets it.
        assert get(f"{server.url}/packages/next-1.0.tar.gz")[2] == files["next-1.0.tar.gz"]
        assert cached(folder) == {catalog["next-1.0.tar.gz"].sha256} and leftovers(folder) == []
        # And the file it was fetching is fetched again, not waited for.
        assert get(f"{server.url}/packages/orphan-1.0.tar.gz")[2] == files["orphan-1.0.tar.gz"]
        assert cached(folder) == {sha256} and folder_bytes(folder) <= cache.max_bytes


# --- a fetch that fails ------------------------------------------------------------------------


@pytest.mark.parametrize("bucket", ["s3"], indirect=True)
def test_a_stream_broken_mid_way_gives_a_short_body_and_leaves_nothing_cached(
    bucket: BucketProbe, proxy: FaultProxy, make_driver_for, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    driver = make_driver_for()
    files = {"cut-1.0.tar.gz": payload("cut", 3 * MIB)}
    catalog = put_files(bucket, driver, files)
    folder = tmp_path / "cache"
    cache = FileCache(folder, 8 * MIB)
    rule = proxy.add_rule("GET", r"cut-1\.0\.tar\.gz", Truncate(2 * MIB + 100))
    with serve(cache, driver, catalog) as server:
        status, declared, body = get_partial(f"{server.url}/packages/cut-1.0.tar.gz")
        assert rule.hits == 1
        # The first bytes went out before the break; the client can tell the body is short.
        assert status == 200 and declared == 3 * MIB and 0 < len(body) < declared
        assert body == files["cut-1.0.tar.gz"][:len(body)]
        assert cached(folder) == set() and leftovers(folder) == []
        assert any("cut-1.0.tar.gz" in r.getMessage() and r.levelno >= logging.ERROR for r in caplog.records)
        proxy.clear_rules()
        assert get(f"{server.url}/packages/cut-1.0.tar.gz")[2] == files["cut-1.0.tar.gz"]
    assert cached(folder) == {catalog["cut-1.0.tar.gz"].sha256}


@pytest.mark.parametrize("bucket", ["local", "s3"], indirect=True)
def test_bytes_other_than_the_index_says_are_never_served_whole_nor_cached(
    bucket: BucketProbe, make_driver_for, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    driver = make_driver_for()
    files = {"stale-1.0.tar.gz": payload("stale", 3 * MIB)}
    entry = put_files(bucket, driver, files)["stale-1.0.tar.gz"]
    # The index's record says other bytes of the same size (another tool rewrote the object).
    catalog = {"stale-1.0.tar.gz": Entry(hashlib.sha256(b"other").hexdigest(), entry.size, entry.version)}
    folder = tmp_path / "cache"
    cache = FileCache(folder, 8 * MIB)
    with serve(cache, driver, catalog) as server:
        status, declared, body = get_partial(f"{server.url}/packages/stale-1.0.tar.gz")
    assert status == 200 and declared == 3 * MIB and len(body) < declared
    assert cached(folder) == set() and leftovers(folder) == []
    assert any("stale-1.0.tar.gz" in r.getMessage() and "sha256" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("bucket", ["local", "s3"], indirect=True)
def test_a_small_file_with_other_bytes_is_a_503_before_any_byte(
    bucket: BucketProbe, make_driver_for, tmp_path: Path
) -> None:
    driver = make_driver_for()
    entry = put_files(bucket, driver, {"small-1.0.tar.gz.metadata": b"Metadata-Version: 2.1\n"})["small-1.0.tar.gz.metadata"]
    catalog = {"small-1.0.tar.gz.metadata": Entry(hashlib.sha256(b"other").hexdigest(), entry.size, entry.version)}
    folder = tmp_path / "cache"
    with serve(FileCache(folder, MIB), driver, catalog) as server:
        status, _headers, body = get(f"{server.url}/packages/small-1.0.tar.gz.metadata")
    # All of it was in hand before the first byte: checked, and refused whole.
    assert status == 503 and b"small-1.0.tar.gz.metadata" in body
    assert cached(folder) == set() and leftovers(folder) == []


@pytest.mark.parametrize("bucket", ["gcs", "s3"], indirect=True)
def test_a_driver_stream_broken_after_its_first_chunk_raises_naming_the_object(
    bucket: BucketProbe, proxy: FaultProxy, make_driver_for
) -> None:
    driver = make_driver_for()
    data = payload("broken", 9 * MIB)  # over two of the GCS driver's ranges
    version = put_files(bucket, driver, {"broken-1.0.tar.gz": data})["broken-1.0.tar.gz"].version
    if bucket.backend == "s3":  # one request: its body breaks off
        proxy.add_rule("GET", r"broken-1\.0\.tar\.gz", Truncate(5 * MIB))
    received = b""
    with pytest.raises(StorageError, match="broken-1.0.tar.gz"):
        with driver.open_stream("broken-1.0.tar.gz", Version(version)) as chunks:
            for chunk in chunks:
                if not received and bucket.backend == "gcs":  # the next ranges break off, every retry
                    proxy.add_rule("GET", r"broken-1\.0\.tar\.gz", Truncate(1000))
                received += chunk
    assert 0 < len(received) < len(data) and data.startswith(received)


@pytest.mark.parametrize("bucket", ["gcs", "s3"], indirect=True)
def test_in_an_outage_a_cached_file_is_served_and_an_uncached_one_is_a_503_naming_it(
    bucket: BucketProbe, proxy: FaultProxy, make_driver_for, tmp_path: Path
) -> None:
    driver = make_driver_for()
    files = {"have-1.0.tar.gz": payload("have", 300 * KIB), "want-1.0.tar.gz": payload("want", 300 * KIB)}
    catalog = put_files(bucket, driver, files)
    folder = tmp_path / "cache"
    cache = FileCache(folder, 4 * MIB)
    with serve(cache, driver, catalog) as server:
        assert get(f"{server.url}/packages/have-1.0.tar.gz")[2] == files["have-1.0.tar.gz"]
        proxy.add_rule(None, ".*", Respond(503, b"unavailable"))
        status, _headers, body = get(f"{server.url}/packages/have-1.0.tar.gz")
        assert status == 200 and body == files["have-1.0.tar.gz"]
        status, _headers, body = get(f"{server.url}/packages/want-1.0.tar.gz")
        assert status == 503 and b"want-1.0.tar.gz" in body
        assert cached(folder) == {catalog["have-1.0.tar.gz"].sha256} and leftovers(folder) == []
        proxy.clear_rules()
        assert get(f"{server.url}/packages/want-1.0.tar.gz")[2] == files["want-1.0.tar.gz"]


def test_a_file_gone_from_the_bucket_is_a_503_naming_it(
    bucket: BucketProbe, make_driver_for, tmp_path: Path
) -> None:
    driver = make_driver_for()
    catalog = put_files(bucket, driver, {"gone-1.0.tar.gz": b"soon gone"})
    bucket.delete("gone-1.0.tar.gz")
    folder = tmp_path / "cache"
    with serve(FileCache(folder, MIB), driver, catalog) as server:
        status, _headers, body = get(f"{server.url}/packages/gone-1.0.tar.gz")
    assert status == 503 and b"gone-1.0.tar.gz" in body
    assert cached(folder) == set() and leftovers(folder) == []


@pytest.mark.parametrize("bucket", ["local"], indirect=True)
def test_a_client_that_goes_away_mid_stream_leaves_the_whole_file_cached(
    bucket: BucketProbe, make_driver_for, tmp_path: Path
) -> None:
    driver = make_driver_for()
    files = {"left-1.0.tar.gz": payload("left", 24 * MIB)}
    catalog = put_files(bucket, driver, files)
    folder = tmp_path / "cache"
    cache = FileCache(folder, 64 * MIB)
    with serve(cache, driver, catalog) as server:
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.sendall(b"GET /packages/left-1.0.tar.gz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert client.recv(4096).startswith(b"HTTP/1.0 200")
        # Gone after its first bytes: the fetch goes on into the cache, whole.
        assert eventually(lambda: cached(folder) == {catalog["left-1.0.tar.gz"].sha256}, 30)
        assert eventually(lambda: leftovers(folder) == [], 10)
        path = folder / catalog["left-1.0.tar.gz"].sha256
        assert path.read_bytes() == files["left-1.0.tar.gz"]
        reads = driver.calls["download"]
        assert get(f"{server.url}/packages/left-1.0.tar.gz")[2] == files["left-1.0.tar.gz"]
        assert driver.calls["download"] == reads


# --- what a hit looks like -------------------------------------------------------------------


def test_a_range_is_served_with_206_from_the_cache_and_on_a_miss(
    bucket: BucketProbe, make_driver_for, tmp_path: Path
) -> None:
    driver = make_driver_for()
    files = {"ranged-1.0-py3-none-any.whl": payload("ranged", 2 * MIB + 5),
             "missed-1.0-py3-none-any.whl": payload("missed", 300 * KIB)}
    catalog = put_files(bucket, driver, files)
    folder = tmp_path / "cache"
    with serve(FileCache(folder, 4 * MIB), driver, catalog) as server:
        data = files["ranged-1.0-py3-none-any.whl"]
        assert get(f"{server.url}/packages/ranged-1.0-py3-none-any.whl")[2] == data
        # uv reads a wheel's metadata from its end.
        status, headers, body = get(f"{server.url}/packages/ranged-1.0-py3-none-any.whl", {"Range": "bytes=-1000"})
        assert status == 206 and body == data[-1000:]
        assert headers["Content-Range"] == f"bytes {len(data) - 1000}-{len(data) - 1}/{len(data)}"
        status, headers, body = get(f"{server.url}/packages/ranged-1.0-py3-none-any.whl", {"Range": "bytes=100-199"})
        assert status == 206 and body == data[100:200]
        # A Range on a miss: fetched whole into the cache first.
        missed = files["missed-1.0-py3-none-any.whl"]
        status, headers, body = get(f"{server.url}/packages/missed-1.0-py3-none-any.whl", {"Range": "bytes=10-19"})
        assert status == 206 and body == missed[10:20]
        assert catalog["missed-1.0-py3-none-any.whl"].sha256 in cached(folder)


@pytest.mark.parametrize("bucket", ["local"], indirect=True)
@pytest.mark.parametrize("name", ["demo-1.0.tar.gz", "demo-1.0-py3-none-any.whl",
                                  "demo-1.0-py3-none-any.whl.metadata", "demo-1.0.zip"])
def test_headers_are_stock_pypiservers_plus_an_etag_on_a_miss_and_a_hit(
    bucket: BucketProbe, make_driver_for, tmp_path: Path, name: str
) -> None:
    driver = make_driver_for()
    data = payload(name, 70 * KIB)
    catalog = put_files(bucket, driver, {name: data})
    stock_root = tmp_path / "mirror"
    stock_root.mkdir()
    (stock_root / name).write_bytes(data)
    with serve(FileCache(tmp_path / "cache", MIB), driver, catalog, cache_control=600, stock_root=stock_root) as server:
        _status, stock, _body = get(f"{server.url}/stock/{name}")
        answers = [get(f"{server.url}/packages/{name}") for _ in ("miss", "hit")]
        for status, headers, body in answers:
            assert status == 200 and body == data
            for header in ("Content-Type", "Content-Length", "Accept-Ranges", "Cache-Control"):
                assert headers.get(header) == stock.get(header), header
            assert "Content-Disposition" not in headers and "Last-Modified" in headers
            assert headers["Etag"] == f'"{catalog[name].sha256}"'
        assert answers[0][1]["Last-Modified"] == answers[1][1]["Last-Modified"]
        # A client that has these bytes (the ETag), or has had them since (the date), gets a 304.
        assert get(f"{server.url}/packages/{name}", {"If-None-Match": answers[1][1]["Etag"]})[0] == 304
        assert get(f"{server.url}/packages/{name}", {"If-Modified-Since": answers[1][1]["Last-Modified"]})[0] == 304


def test_a_file_replaced_in_the_bucket_is_never_served_stale(
    bucket: BucketProbe, make_driver_for, tmp_path: Path
) -> None:
    driver = make_driver_for()
    folder = tmp_path / "cache"
    cache = FileCache(folder, MIB)
    catalog = put_files(bucket, driver, {"redo-1.0.tar.gz": b"first bytes"})
    with serve(cache, driver, catalog) as server:
        assert get(f"{server.url}/packages/redo-1.0.tar.gz")[2] == b"first bytes"
        # The index learns the new bytes (the sync updates its catalogue): they are fetched.
        catalog.update(put_files(bucket, driver, {"redo-1.0.tar.gz": b"second bytes!"}))
        assert get(f"{server.url}/packages/redo-1.0.tar.gz")[2] == b"second bytes!"
    assert len(cached(folder)) == 2

