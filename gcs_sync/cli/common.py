"""What every command shares: the exit codes and the storage flags that override variables."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Iterator, Mapping, Sequence

from tqdm import tqdm

from gcs_sync.auth.startup import check_startup
from gcs_sync.config import Settings
from gcs_sync.drivers import FileStoreDriver, make_driver

EXIT_OK = 0
EXIT_DIFFERENT = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_STORAGE = 4
EXIT_INTERRUPTED = 130

# Flags that override environment variables, as (flag, variable, help).
_STORE_FLAGS = (
    ("--tier", "TIER", "dev or prod: picks the defaults of the other settings"),
    ("--backend", "STORAGE_BACKEND", "gcs, s3 or local"),
    ("--bucket", "BUCKET_NAME", "the bucket's name (for local: a folder)"),
    ("--remote-dir", "REMOTE_PACKAGE_DIRECTORY", "the folder inside the bucket that holds the packages"),
    ("--local-dir", "LOCAL_PACKAGE_DIRECTORY", "the local package folder the server serves"),
    ("--timeout", "STORAGE_TIMEOUT", "seconds one bucket operation may take, retries included"),
    ("--concurrency", "SYNC_CONCURRENCY", "transfers at a time (1-64)"),
    ("--log-level", "LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR"),
)


def store_options() -> argparse.ArgumentParser:
    """The flags every command that talks to the bucket takes."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("storage (flags override environment variables)")
    for flag, variable, text in _STORE_FLAGS:
        group.add_argument(flag, metavar=variable, dest=variable, help=f"{text} [env {variable}]")
    return parent


def overridden_environ(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment with every flag that was given put in place of its variable."""
    merged = dict(environ)
    for _, variable, _ in _STORE_FLAGS:
        value = getattr(args, variable, None)
        if value is not None:
            merged[variable] = value
    return merged


def store_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Settings for the commands that move packages, through the server's start-up check.
    They serve no requests, so the server's auth settings (PASSWORD_FILE, AUTHENTICATE)
    are not read or checked here."""
    merged = overridden_environ(args, environ)
    merged.pop("PASSWORD_FILE", None)
    merged["AUTHENTICATE"] = "."
    settings = Settings.from_env(merged)
    check_startup(settings)
    return settings


def open_bucket(settings: Settings, *, may_create: bool = False) -> FileStoreDriver:
    """The settings' driver, after one cheap request that fails (exit 4) if the bucket is
    missing or may not be listed. Only push may create the dev default bucket folder."""
    if not may_create:
        settings = dataclasses.replace(settings, create_bucket_folder=False)
    driver = make_driver(settings)
    driver.check_bucket()
    return driver


def progress_bar(args: argparse.Namespace, total: int, description: str) -> tqdm:
    shown = args.progress if args.progress is not None else sys.stderr.isatty()
    return tqdm(total=total, desc=description, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr, disable=not shown, leave=False)


def human_bytes(size: float) -> str:
    if size < 1024:
        return f"{int(size)} bytes"
    for unit in ("KiB", "MiB"):
        size /= 1024
        if size < 1024:
            return f"{size:.1f} {unit}"
    return f"{size / 1024:.1f} GiB"


def section(title: str, lines: Sequence[str]) -> Iterator[str]:
    if lines:
        yield f"{title}: {len(lines)}"
        yield from (f"  {line}" for line in lines)
