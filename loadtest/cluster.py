"""The system under load: a bucket (with its storage server for gcs and s3, the same ones
the tests use) and two instances of two gunicorn workers each on it."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator

from testkit.buckets import BucketProbe, GCSProbe, LocalProbe, S3Probe
from testkit.servers import Instance, start_instance
from testkit.storage_servers import fake_cloud_env, gcs_emulator, s3_server, write_htpasswd

from .workload import FULL_SYNC_INTERVAL, SYNC_INTERVAL

BACKENDS = ("local", "gcs", "s3")
WORKERS = 2


@contextlib.contextmanager
def open_bucket(backend: str, workdir: Path) -> Iterator[BucketProbe]:
    """A new bucket, with its storage server on 127.0.0.1 for gcs and s3 (stopped on exit)."""
    with fake_cloud_env():
        if backend == "local":
            yield LocalProbe(workdir / "bucket")
        elif backend == "gcs":
            with gcs_emulator() as host:
                yield GCSProbe(host)
        elif backend == "s3":
            logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request
            with s3_server() as endpoint:
                yield S3Probe(endpoint)
        else:
            raise ValueError(f"unknown backend {backend!r}: one of {', '.join(BACKENDS)}")


@contextlib.contextmanager
def two_instances(probe: BucketProbe, workdir: Path) -> Iterator[dict[str, Instance]]:
    """Instances A and B: separate local folders, the same bucket, short freshness bounds."""
    env = {
        **probe.env(),
        "PASSWORD_FILE": str(write_htpasswd(workdir / "htpasswd")),
        "SYNC_INTERVAL": str(SYNC_INTERVAL),
        "FULL_SYNC_INTERVAL": str(FULL_SYNC_INTERVAL),
    }
    started: dict[str, Instance] = {}
    try:
        for name in "AB":
            log_dir = workdir / f"logs-{name}"
            log_dir.mkdir(parents=True, exist_ok=True)
            started[name] = start_instance(env, workdir / f"folder-{name}", log_dir, workers=WORKERS)
        yield started
    finally:
        for instance in started.values():
            instance.stop()
