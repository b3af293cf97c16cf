"""Real storage servers on 127.0.0.1, started in this process: gcp-storage-emulator for
GCS and moto's ThreadedMotoServer for S3. Used by the pytest fixtures (conftest.py) and by
the load test (``python -m loadtest``), which need the same servers outside pytest."""

from __future__ import annotations

import contextlib
import http.server
import os
import urllib.request
from pathlib import Path
from typing import Iterator, Mapping

from passlib.apache import HtpasswdFile

from .servers import PASSWORD, USER, free_port
from .wait import eventually

# Credentials and regions for the emulators only; nothing may reach a real cloud.
FAKE_CLOUD_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "GOOGLE_CLOUD_PROJECT": "test",
}


@contextlib.contextmanager
def patched_environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set these environment variables for the duration, then put back what was there."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def fake_cloud_env() -> contextlib.AbstractContextManager[None]:
    return patched_environ(FAKE_CLOUD_ENV)


def wait_until_up(url: str) -> None:
    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            return False

    if not eventually(answers, 30):
        raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def gcs_emulator() -> Iterator[str]:
    """gcp-storage-emulator (in memory) with GCS's generation preconditions; yields its
    URL, which is also in STORAGE_EMULATOR_HOST meanwhile (the SDK reads it there)."""
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
    try:
        wait_until_up(host + "/")
        os.environ["STORAGE_EMULATOR_HOST"] = host
        yield host
    finally:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
        server.stop()


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server; yields its endpoint, which is also in AWS_ENDPOINT_URL meanwhile."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(endpoint + "/moto-api/")
        os.environ["AWS_ENDPOINT_URL"] = endpoint  # boto3's own variable, read by our driver too
        yield endpoint
    finally:
        os.environ.pop("AWS_ENDPOINT_URL", None)
        server.stop()


def write_htpasswd(path: Path) -> Path:
    """An htpasswd file with the tests' user (servers.USER / servers.PASSWORD)."""
    users = HtpasswdFile(str(path), new=True)
    users.set_password(USER, PASSWORD)
    users.save()
    return path
