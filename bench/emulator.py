"""The GCS emulator (gcp-storage-emulator, from the venv) as a subprocess, and a bucket in it.

It is single-threaded and slows as it fills: uploading 1,000 small files takes ~16 s.

It is started as ``bin/gcp-storage-emulator start`` would be, with one change: a listen
backlog of 128 instead of socketserver's 5. With 5, eight parallel downloads overflow the
accept queue and the kernel drops the connection, which the client retries only after
1 s (measured: 200 downloads with 8 threads took 1.13 s against 0.43 s sequentially, with
TcpExtListenOverflows rising); a parallel cold start would measure that, not the wrapper.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from testkit.servers import free_port

from .errors import BenchError
from .repository import Repository

PROJECT = "bench"
BOOT_SECONDS = 30


@dataclasses.dataclass(frozen=True)
class Emulator:
    host: str
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self, url: str | None = None) -> dict[str, str]:
        """What the SDK needs: the endpoint (this emulator, or a proxy in front of it)."""
        return {"STORAGE_EMULATOR_HOST": url or self.url, "GOOGLE_CLOUD_PROJECT": PROJECT}


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


# bin/gcp-storage-emulator, with a real listen backlog (the module docstring says why).
_LAUNCHER = """
import http.server, sys
http.server.HTTPServer.request_queue_size = 128
from gcp_storage_emulator.__main__ import main
sys.argv[0] = "gcp-storage-emulator"
sys.exit(main())
"""


@contextlib.contextmanager
def running_emulator(log_path: Path) -> Iterator[Emulator]:
    if importlib.util.find_spec("gcp_storage_emulator") is None:
        raise BenchError("gcp-storage-emulator is not installed: install requirements-test.txt into this venv")
    port = free_port()
    emulator = Emulator("127.0.0.1", port, log_path)
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen([sys.executable, "-c", _LAUNCHER, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"],
                                   stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + BOOT_SECONDS
        while True:
            if process.poll() is not None:
                raise BenchError(f"GCS emulator exited with {process.returncode} while starting:\n{_tail(log_path)}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/")
                conn.getresponse().read()
                conn.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError(f"GCS emulator did not answer within {BOOT_SECONDS}s:\n{_tail(log_path)}")
                time.sleep(0.1)
        yield emulator
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def fill_bucket(emulator: Emulator, bucket: str, repository: Repository, prefix: str = "packages") -> None:
    """Create ``bucket`` and upload the repository's files under ``prefix/``."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    # The SDK picks the emulator up from STORAGE_EMULATOR_HOST, read at construction.
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = emulator.url
    try:
        client = storage.Client(project=PROJECT, credentials=AnonymousCredentials())
        target = client.create_bucket(bucket)
        for name in repository.files:
            path = repository.folder / name
            blob = target.blob(f"{prefix}/{name}")
            # As the index's own uploads do: the digest travels as object metadata.
            blob.metadata = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
            blob.upload_from_filename(str(path))
    except Exception as exc:
        raise BenchError(f"filling GCS emulator bucket {bucket!r} at {emulator.url} failed: "
                         f"{type(exc).__name__}: {exc}\n{_tail(emulator.log_path)}") from exc
    finally:
        if saved is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = saved
