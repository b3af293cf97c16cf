"""GCS's limit of about one write per second to one object, modelled: uploads through an
instance are not queued behind it.

The fault proxy (testkit/fault_proxy.py, ``OneWritePerSecond``) sits between the instance
(gunicorn, two workers) and the GCS emulator and answers 429 ``rateLimitExceeded`` to a
write of an object name accepted less than a second before, as GCS does. A design that
rewrites one object per change (the change marker before issue 13) has every concurrent
upload write that object: the SDK retries the 429s, and uploads queue to about one per
second for the whole bucket. With the change feed every write names a new object, so the
proxy answers no 429 at all. No wall-clock assert: what is checked is that no object was
written twice within a second (zero 429s), that every upload was acknowledged, and that
every file is listed by the instance and is in the bucket.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Iterator

import pytest

from testkit.buckets import GCSProbe
from testkit.fault_proxy import FaultProxy, OneWritePerSecond
from testkit.packages import make_wheel
from testkit.servers import Instance, links, start_instance, upload_form
from testkit.wait import eventually

pytestmark = pytest.mark.slow

UPLOADS = 30
CLIENTS = 6
PROJECTS = 5  # several files per project: uploads to one project race too


@pytest.fixture
def throttled(gcs_emulator: str) -> Iterator[tuple[FaultProxy, OneWritePerSecond]]:
    host, port = gcs_emulator.removeprefix("http://").split(":")
    with FaultProxy(host, int(port)) as proxy:
        limit = OneWritePerSecond()
        proxy.add_rule(None, "", limit)
        yield proxy, limit


@pytest.fixture
def instance(gcs_emulator: str, throttled: tuple[FaultProxy, OneWritePerSecond], tmp_path: Path,
             htpasswd: Path) -> Iterator[tuple[Instance, GCSProbe]]:
    bucket = GCSProbe(gcs_emulator)  # the test's own view of the bucket: straight to the emulator
    proxy, _ = throttled
    started = start_instance({**bucket.env(), "STORAGE_EMULATOR_HOST": proxy.url, "PASSWORD_FILE": str(htpasswd),
                              "SYNC_INTERVAL": "1"}, tmp_path / "local", tmp_path)
    try:
        yield started, bucket
    finally:
        started.stop()


def test_concurrent_uploads_never_write_one_object_twice_within_a_second(
    instance: tuple[Instance, GCSProbe], throttled: tuple[FaultProxy, OneWritePerSecond], tmp_path: Path
) -> None:
    server, bucket = instance
    _, limit = throttled
    wheels = [make_wheel(tmp_path / "dist", f"throttled-{k % PROJECTS}", f"1.0.{k}") for k in range(UPLOADS)]
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        answers = list(pool.map(lambda wheel: upload_form(server.url, wheel.name, wheel.read_bytes()), wheels))
    refused = [(wheel.name, status, text[:200]) for wheel, (status, text) in zip(wheels, answers) if status != 200]
    assert refused == [], server.log()[-3000:]
    # The model's verdict: a second write of one name within a second would have been a 429.
    assert limit.throttled == [], f"objects written twice within a second: {sorted(set(limit.throttled))}"
    missing = [wheel.name for wheel in wheels if bucket.get(wheel.name) != wheel.read_bytes()]
    assert missing == []

    def all_listed() -> bool:
        listed = set().union(*(links(server, f"throttled-{p}") for p in range(PROJECTS)))
        return all(wheel.name in listed for wheel in wheels)

    assert eventually(all_listed, 10)
