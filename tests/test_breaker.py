"""A bucket outage fails uploads fast, as the client sees it (issue 9, item 12): real
gunicorn, real twine, a fault proxy in front of the GCS emulator or moto.

STORAGE_TIMEOUT is left at its default (10 s), so the figures are those of a default
deployment. twine 7 does not retry a POST; it uploads a wheel and an sdist one POST
each and stops at the first failure.
"""

from __future__ import annotations

import io
import sys
import tarfile
import time
from pathlib import Path

import pytest

from testkit.buckets import BucketProbe
from testkit.fault_proxy import Delay, FaultProxy, Respond
from testkit.packages import make_wheel
from testkit.servers import run, start_instance, twine_upload
from testkit.wait import eventually

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("bucket", ["gcs", "s3"], indirect=True)]

OUTAGES = {"503": Respond(503, b"unavailable"), "no answer": Delay(40)}


def make_sdist(folder: Path, name: str, version: str) -> Path:
    """A minimal sdist twine accepts: PKG-INFO in the one top folder, NAME-VERSION/."""
    sdist = folder / f"{name}-{version}.tar.gz"
    info = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: a test sdist\n".encode()
    with tarfile.open(sdist, "w:gz") as tar:
        for path, data in ((f"{name}-{version}/PKG-INFO", info), (f"{name}-{version}/{name}.py", b"")):
            member = tarfile.TarInfo(path)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return sdist


@pytest.mark.parametrize("fault", list(OUTAGES))
def test_twine_upload_during_an_outage_fails_within_30s_and_works_again_seconds_after_recovery(
    fault: str, bucket: BucketProbe, proxy: FaultProxy, tmp_path: Path, htpasswd: Path
) -> None:
    assert run([sys.executable, "-m", "twine", "--version"]).returncode == 0
    endpoint = {"STORAGE_EMULATOR_HOST" if bucket.backend == "gcs" else "AWS_ENDPOINT_URL": proxy.url}
    instance = start_instance({**bucket.env(), **endpoint, "PASSWORD_FILE": str(htpasswd)},
                              tmp_path / "served", tmp_path)
    try:
        assert instance.get("/simple/")[0] == 200
        dist = tmp_path / "dist"
        files = [make_wheel(dist, "outage", "1.0"), make_sdist(dist, "outage", "1.0")]
        proxy.add_rule(None, ".*", OUTAGES[fault])

        started = time.monotonic()
        first = twine_upload(instance.url, *files)
        first_took = time.monotonic() - started
        assert first.returncode != 0 and "503" in first.stdout + first.stderr
        assert first_took < 30, first_took  # the bound

        # twine sent the wheel 6 times (5 retries of a 5xx): the bucket saw the first only.
        assert first.stdout.count("Retry 5 of 5") == 1 and "outage-1.0.tar.gz" not in first.stdout
        # Run again later (its first POST probes the bucket): the same bound.
        started = time.monotonic()
        second = twine_upload(instance.url, *files)
        second_took = time.monotonic() - started
        assert second.returncode != 0 and "Bucket write failed" in second.stdout + second.stderr
        assert second_took < 30, second_took
        print(f"{bucket.backend}, {fault}: first twine upload failed in {first_took:.1f}s, "
              f"the next in {second_took:.1f}s")

        proxy.clear_rules()
        recovered = time.monotonic()
        attempts = []

        def works() -> bool:  # as a user would: run it again until it works, for a bounded time
            attempts.append(twine_upload(instance.url, *files))
            return attempts[-1].returncode == 0

        eventually(works, 30, interval=0.5)
        again = attempts[-1]
        took = time.monotonic() - recovered
        assert again.returncode == 0, again.stdout + again.stderr
        assert took < 15, took  # within seconds: the breaker's short window, then one upload
        print(f"{bucket.backend}, {fault}: twine upload worked again {took:.1f}s after the recovery")
        assert {f.name for f in files} <= bucket.names()
    finally:
        instance.stop()
