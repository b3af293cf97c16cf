"""Fixtures: real storage servers on 127.0.0.1, one fresh bucket per test, parametrized
over the three drivers."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

import pytest

from gcs_sync import Settings
from gcs_sync.drivers import FileStoreDriver, make_driver
from gcs_sync.sync.feed import ChangeFeed, ChangeKind
from testkit import storage_servers
from testkit.buckets import PREFIX, BucketProbe, GCSProbe, LocalProbe, S3Probe
from testkit.fault_proxy import FaultProxy

BACKENDS = ["local", "gcs", "s3"]


@pytest.fixture(scope="session", autouse=True)
def fake_cloud_env() -> Iterator[None]:
    with storage_servers.fake_cloud_env():
        yield


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    with storage_servers.gcs_emulator() as host:
        yield host


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    with storage_servers.s3_server() as endpoint:
        yield endpoint


def new_probe(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> BucketProbe:
    """A new, empty bucket on ``backend``'s real server (the server fixture starts it)."""
    if backend == "gcs":
        return GCSProbe(request.getfixturevalue("gcs_emulator"))
    if backend == "s3":
        return S3Probe(request.getfixturevalue("s3_server"))
    return LocalProbe(tmp_path / "bucket")


@pytest.fixture(params=BACKENDS)
def bucket(request: pytest.FixtureRequest, tmp_path: Path) -> BucketProbe:
    """A new, empty bucket on each driver's real server."""
    return new_probe(request.param, request, tmp_path)


def settings_for(bucket: BucketProbe, folder: Path, **overrides: object) -> Settings:
    env = {**bucket.env(), "LOCAL_PACKAGE_DIRECTORY": str(folder), "SYNC_INTERVAL": "1"}
    env.update({k: str(v) for k, v in overrides.items()})
    return Settings.from_env(env)


def announce(bucket: BucketProbe, kind: ChangeKind, filename: Optional[str] = None,
             sha256: Optional[str] = None) -> None:
    """What another instance adds to the bucket's change feed after a change it made
    (an upload, a removal, ``users add``): one entry, written by the index's own feed."""
    ChangeFeed(make_driver(settings_for(bucket, Path("unused")))).announce(kind, filename, sha256)


@pytest.fixture
def driver(bucket: BucketProbe, tmp_path: Path) -> FileStoreDriver:
    """Our driver for ``bucket``."""
    return make_driver(settings_for(bucket, tmp_path / "unused"))


@pytest.fixture
def proxy(bucket: BucketProbe, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A fault proxy (testkit/fault_proxy.py) in front of this bucket's server; apps made after this fixture go through it."""
    server = request.getfixturevalue("gcs_emulator" if bucket.backend == "gcs" else "s3_server")
    host, port = server.removeprefix("http://").split(":")
    with FaultProxy(host, int(port)) as fault_proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST" if bucket.backend == "gcs" else "AWS_ENDPOINT_URL",
                           fault_proxy.url)
        yield fault_proxy


@pytest.fixture(autouse=True)
def stop_in_process_apps() -> Iterator[None]:
    """After each test, stop the checker threads of the apps it made in this process."""
    yield
    from .test_app import App

    for app in App.running:
        app.client.stop()
    App.running.clear()


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    return storage_servers.write_htpasswd(tmp_path / "htpasswd")


__all__ = ["PREFIX", "announce", "settings_for"]
