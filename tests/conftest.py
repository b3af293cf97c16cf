"""Fixtures: real storage servers on 127.0.0.1, one fresh bucket per test, parametrized
over the three drivers."""

from __future__ import annotations

import http.server
import os
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from passlib.apache import HtpasswdFile

from gcs_sync import Settings
from gcs_sync.drivers import FileStoreDriver, make_driver

from .buckets import PREFIX, BucketProbe, GCSProbe, LocalProbe, S3Probe
from .servers import PASSWORD, USER, free_port

BACKENDS = ["local", "gcs", "s3"]

# Credentials and regions for the emulators only; nothing may reach a real cloud.
_FAKE_CLOUD_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "GOOGLE_CLOUD_PROJECT": "test",
}


@pytest.fixture(scope="session", autouse=True)
def fake_cloud_env() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in _FAKE_CLOUD_ENV}
    os.environ.update(_FAKE_CLOUD_ENV)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _wait_until_up(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    from gcp_storage_emulator.server import create_server

    from .gcs_preconditions import enforce_generation_preconditions

    enforce_generation_preconditions()
    # socketserver listens with a backlog of 5: parallel downloads (SYNC_CONCURRENCY=8)
    # would overflow it, and each dropped connection costs the client a 1 s TCP retry.
    http.server.HTTPServer.request_queue_size = 128
    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    host = f"http://127.0.0.1:{port}"
    _wait_until_up(host + "/")
    os.environ["STORAGE_EMULATOR_HOST"] = host
    yield host
    os.environ.pop("STORAGE_EMULATOR_HOST", None)
    server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    _wait_until_up(endpoint + "/moto-api/")
    os.environ["AWS_ENDPOINT_URL"] = endpoint  # boto3's own variable, read by our driver too
    yield endpoint
    os.environ.pop("AWS_ENDPOINT_URL", None)
    server.stop()


def _probe(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> BucketProbe:
    if backend == "gcs":
        return GCSProbe(request.getfixturevalue("gcs_emulator"))
    if backend == "s3":
        return S3Probe(request.getfixturevalue("s3_server"))
    return LocalProbe(tmp_path / "bucket")


@pytest.fixture(params=BACKENDS)
def bucket(request: pytest.FixtureRequest, tmp_path: Path) -> BucketProbe:
    """A new, empty bucket on each driver's real server."""
    return _probe(request.param, request, tmp_path)


def settings_for(bucket: BucketProbe, folder: Path, **overrides: object) -> Settings:
    env = {**bucket.env(), "LOCAL_PACKAGE_DIRECTORY": str(folder), "SYNC_INTERVAL": "1"}
    env.update({k: str(v) for k, v in overrides.items()})
    return Settings.from_env(env)


@pytest.fixture
def driver(bucket: BucketProbe, tmp_path: Path) -> FileStoreDriver:
    """Our driver for ``bucket``."""
    return make_driver(settings_for(bucket, tmp_path / "unused"))


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    path = tmp_path / "htpasswd"
    users = HtpasswdFile(str(path), new=True)
    users.set_password(USER, PASSWORD)
    users.save()
    return path


__all__ = ["PREFIX", "settings_for"]
