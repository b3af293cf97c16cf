"""What every worker and every instance serves, and when (README: "How fresh is it").

Two gunicorn processes of one worker each on the same local folder are two sibling
workers (shared folder, state and lock, one in-memory index each) that a test can address
one at a time; a gunicorn master would hand requests to either at random. A third
process with its own folder is another instance.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Callable, Iterator

import pytest

from testkit.packages import sdist_bytes
from testkit.buckets import BucketProbe
from testkit.fault_proxy import FaultProxy
from testkit.servers import Instance, links, remove_form, start_instance, upload_form
from testkit.wait import eventually

pytestmark = pytest.mark.slow

SYNC_INTERVAL = 1.0
FULL_SYNC_INTERVAL = 2.0
# README's bounds add the duration of one check (reads never wait for it: they are served
# the last complete view while it runs); on loopback a check takes milliseconds, and this
# margin also covers a loaded test machine.
CHECK_MARGIN = 2.0


@dataclasses.dataclass
class Cluster:
    worker_1: Instance  # instance A, first worker
    worker_2: Instance  # instance A, its sibling
    other: Instance  # instance B

    @property
    def everyone(self) -> list[Instance]:
        return [self.worker_1, self.worker_2, self.other]


@pytest.fixture
def start_cluster(bucket: BucketProbe, tmp_path: Path, htpasswd: Path) -> Iterator[Callable[..., Cluster]]:
    started: list[Instance] = []

    def _start(**env: str) -> Cluster:
        base = {**bucket.env(), "PASSWORD_FILE": str(htpasswd), "SYNC_INTERVAL": str(SYNC_INTERVAL),
                "FULL_SYNC_INTERVAL": str(FULL_SYNC_INTERVAL), **env}
        for folder, log_dir in ((tmp_path / "a", tmp_path / "a1"), (tmp_path / "a", tmp_path / "a2"),
                                (tmp_path / "b", tmp_path / "b")):
            log_dir.mkdir(exist_ok=True)
            started.append(start_instance(base, folder, log_dir, workers=1))
        return Cluster(*started)

    yield _start
    for instance in started:
        instance.stop()


def served(instance: Instance, filename: str) -> bytes | None:
    status, body = instance.get(f"/packages/{filename}")
    return body if status == 200 else None


def test_an_upload_and_a_removal_reach_sibling_workers_at_once_and_other_instances_within_the_interval(
    start_cluster: Callable[..., Cluster],
) -> None:
    cluster = start_cluster()
    for instance in cluster.everyone:
        assert instance.get("/simple/")[0] == 200  # every view is fresh and empty
    data = sdist_bytes("seen", "1.0", "first upload")
    assert upload_form(cluster.worker_1.url, "seen-1.0.tar.gz", data)[0] == 200
    digest = hashlib.sha256(data).hexdigest()
    # The uploading worker and its sibling share the folder's state: no waiting.
    for worker in (cluster.worker_1, cluster.worker_2):
        assert links(worker, "seen") == {"seen-1.0.tar.gz": digest}
        assert served(worker, "seen-1.0.tar.gz") == data
    assert eventually(lambda: links(cluster.other, "seen") == {"seen-1.0.tar.gz": digest}, SYNC_INTERVAL + CHECK_MARGIN)
    assert served(cluster.other, "seen-1.0.tar.gz") == data

    assert remove_form(cluster.worker_2.url, "seen", "1.0")[0] == 200
    for worker in (cluster.worker_1, cluster.worker_2):
        assert links(worker, "seen") == {} and served(worker, "seen-1.0.tar.gz") is None
    assert eventually(lambda: links(cluster.other, "seen") == {}, SYNC_INTERVAL + CHECK_MARGIN)
    assert served(cluster.other, "seen-1.0.tar.gz") is None


def test_changes_made_straight_in_the_bucket_reach_everyone_within_the_full_listing_interval(
    start_cluster: Callable[..., Cluster], bucket: BucketProbe
) -> None:
    cluster = start_cluster()
    for instance in cluster.everyone:
        assert instance.get("/simple/")[0] == 200
    bucket.put("direct-1.0.tar.gz", b"one")
    bucket.put("direct-2.0.tar.gz", b"two")
    both = {"direct-1.0.tar.gz": hashlib.sha256(b"one").hexdigest(),
            "direct-2.0.tar.gz": hashlib.sha256(b"two").hexdigest()}
    for instance in cluster.everyone:
        assert eventually(lambda: links(instance, "direct") == both, FULL_SYNC_INTERVAL + CHECK_MARGIN)
    bucket.put("direct-1.0.tar.gz", b"one, replaced")
    bucket.delete("direct-2.0.tar.gz")
    replaced = {"direct-1.0.tar.gz": hashlib.sha256(b"one, replaced").hexdigest()}
    for instance in cluster.everyone:
        assert eventually(lambda: links(instance, "direct") == replaced, FULL_SYNC_INTERVAL + CHECK_MARGIN)
        assert served(instance, "direct-1.0.tar.gz") == b"one, replaced"
        assert served(instance, "direct-2.0.tar.gz") is None


def test_a_same_name_replacement_changes_the_digest_everywhere(start_cluster: Callable[..., Cluster]) -> None:
    cluster = start_cluster(OVERWRITE="true")
    for instance in cluster.everyone:
        assert instance.get("/simple/")[0] == 200
    for content, through in ((sdist_bytes("again", "1.0", "version one"), cluster.worker_1),
                             (sdist_bytes("again", "1.0", "version two"), cluster.other)):
        assert upload_form(through.url, "again-1.0.tar.gz", content)[0] == 200
        expected = {"again-1.0.tar.gz": hashlib.sha256(content).hexdigest()}
        for instance in cluster.everyone:
            assert eventually(lambda: links(instance, "again") == expected, SYNC_INTERVAL + CHECK_MARGIN)
            assert served(instance, "again-1.0.tar.gz") == content


@pytest.mark.parametrize("bucket", ["gcs"], indirect=True)
def test_during_a_cold_start_every_listed_file_downloads_with_its_digest(
    bucket: BucketProbe, gcs_emulator: str, tmp_path: Path
) -> None:
    """The index grows while a cold start downloads; whatever it lists at any moment can
    be downloaded, with the digest in its link. A latency proxy in front of the emulator
    (100 ms a request, as a distant bucket) stretches the cold start so it can be watched,
    and STORAGE_TIMEOUT=1 keeps requests from waiting for the whole of it (a request waits
    for a sync under way up to STORAGE_TIMEOUT, then serves what is there)."""
    contents = {f"cold{i % 20}-1.{i}.tar.gz": f"content {i} ".encode() * (50 + i) for i in range(120)}
    for name, data in contents.items():
        bucket.put(name, data)
    host, port = gcs_emulator.removeprefix("http://").split(":")
    with FaultProxy(host, int(port)) as proxy:
        proxy.latency = 0.1
        instance = start_instance(
            {**bucket.env(), "STORAGE_EMULATOR_HOST": proxy.url, "SYNC_CONCURRENCY": "2", "STORAGE_TIMEOUT": "1"},
            tmp_path / "cold", tmp_path, workers=1,
        )
        try:
            partial_views = 0
            listed: dict[str, str] = {}

            def whole() -> bool:
                nonlocal partial_views
                listed.clear()
                for project in range(20):
                    listed.update(links(instance, f"cold{project}"))
                for filename, digest in listed.items():
                    body = served(instance, filename)
                    assert body is not None, f"{filename} is listed but not served"
                    assert hashlib.sha256(body).hexdigest() == digest == hashlib.sha256(contents[filename]).hexdigest()
                if len(listed) == len(contents):
                    return True
                partial_views += bool(listed)
                return False

            eventually(whole, 60, interval=0)
            assert len(listed) == len(contents)
        finally:
            instance.stop()
    assert partial_views > 0, "the cold start ended before a partial index was seen"
