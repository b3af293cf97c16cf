"""The wrapper's side: its environment, the in-process pre-sync, and its bucket API calls.

Pre-sync: ``build_app(Settings.from_env(env)).config["gcs_sync.client"].sync()`` fills the
local folder before gunicorn starts, so the measured run is steady state. Bucket calls made
by the workers are written by ``gunicorn_hooks.worker_exit`` to ``BENCH_CALLS_DIR`` as
``<pid>.json`` when they exit, and summed here after gunicorn has stopped.
"""

from __future__ import annotations

import collections
import json
import logging
import sys
import time
from pathlib import Path

from testkit.storage_servers import patched_environ

from .errors import BenchError
from .servers import REPO

# The product's variables and the SDKs' endpoints: none may leak in from the caller's shell.
PRODUCT_VARIABLES = (
    "TIER", "STORAGE_BACKEND", "BUCKET_NAME", "REMOTE_PACKAGE_DIRECTORY", "LOCAL_PACKAGE_DIRECTORY",
    "PASSWORD_FILE", "AUTHENTICATE", "OVERWRITE", "SYNC_INTERVAL", "FULL_SYNC_INTERVAL",
    "SYNC_CONCURRENCY", "PUSH_LOCAL_CHANGES", "DISABLE_FALLBACK", "FALLBACK_URL", "HASH_ALGO",
    "HEALTH_ENDPOINT", "CACHE_CONTROL", "STORAGE_TIMEOUT", "LOG_LEVEL", "PORT", "WEB_CONCURRENCY",
    "STORAGE_EMULATOR_HOST", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "BENCH_CALLS_DIR", "PACKAGE_FILES",
    "CACHE_MAX_BYTES",
)
# Read by the SDK from os.environ, not from Settings: set them for the in-process pre-sync.
SDK_VARIABLES = ("STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT")


def wrapper_env(*, backend: str, bucket: str, local_folder: Path, calls_dir: Path,
                extra: dict[str, str] | None = None) -> dict[str, str]:
    """The product settings of a benchmarked wrapper (read-only: no PASSWORD_FILE)."""
    env = {
        "TIER": "dev",
        "STORAGE_BACKEND": backend,
        "BUCKET_NAME": bucket,
        "REMOTE_PACKAGE_DIRECTORY": "packages",
        "LOCAL_PACKAGE_DIRECTORY": str(local_folder),
        "PUSH_LOCAL_CHANGES": "false",
        "BENCH_CALLS_DIR": str(calls_dir),
    }
    env.update(extra or {})
    calls_dir.mkdir(parents=True, exist_ok=True)
    local_folder.mkdir(parents=True, exist_ok=True)
    return env


def presync(env: dict[str, str]) -> tuple[float, dict[str, int]]:
    """Fill the wrapper's local folder in this process; (seconds, bucket calls by operation)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from gcs_sync import Settings, build_app

    logging.getLogger("gcs_sync").setLevel(logging.ERROR)  # its start-up warnings are for operators
    started = time.monotonic()
    with patched_environ({key: env[key] for key in SDK_VARIABLES if key in env}):
        try:
            client = build_app(Settings.from_env(env)).config["gcs_sync.client"]
            client.sync()
        except Exception as exc:
            raise BenchError(f"wrapper pre-sync from {env['STORAGE_BACKEND']} bucket {env['BUCKET_NAME']} "
                             f"failed: {type(exc).__name__}: {exc}") from exc
    return time.monotonic() - started, dict(client.driver.calls)


def worker_calls(calls_dir: Path) -> tuple[collections.Counter, int]:
    """Bucket calls of every worker that exited (summed), and how many workers reported."""
    total: collections.Counter = collections.Counter()
    files = sorted(calls_dir.glob("*.json"))
    for path in files:
        total.update(json.loads(path.read_text(encoding="utf-8")))
    return total, len(files)
