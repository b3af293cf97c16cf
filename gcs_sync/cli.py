"""The operator's command line: ``python -m gcs_sync COMMAND`` (``--help`` on each).

It reads the same environment variables as the server, through ``Settings.from_env``;
a flag overrides its variable (each flag's help names it).

Exit codes, the same for every command:
    0  done; for status and verify: the folder and the bucket agree
    1  done, but something differs or failed (status, verify, push, pull say what)
    2  usage error (a bad flag or argument)
    3  configuration error (a variable or flag with a bad value)
    4  the bucket could not be used (missing, permission denied, not answering)
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable, Mapping, Optional, Sequence

from .config import Settings
from .errors import ConfigError, StorageError

log = logging.getLogger(__name__)

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
    """Settings for the commands that move packages. They serve no requests, so the
    server's auth settings (PASSWORD_FILE, AUTHENTICATE) are not read or checked here."""
    merged = overridden_environ(args, environ)
    merged.pop("PASSWORD_FILE", None)
    merged["AUTHENTICATE"] = "."
    return Settings.from_env(merged)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gcs_sync",
        description="Operate a gcs_sync package index: compare, move and check packages between "
        "the local folder and the bucket, and manage its users.",
        epilog="Exit codes: 0 ok, 1 differences or failures found, 2 usage error, "
        "3 configuration error, 4 bucket not usable, 130 interrupted.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parent = store_options()
    # Each module adds its commands; each command sets ``run(args, environ) -> exit code``.
    from . import cli_packages, cli_users

    cli_packages.add_commands(commands, parent)
    cli_users.add_commands(commands, parent)
    return parser


def main(argv: Optional[Sequence[str]] = None, environ: Optional[Mapping[str, str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    environ = os.environ if environ is None else environ
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s",
                        level=(getattr(args, "LOG_LEVEL", None) or environ.get("LOG_LEVEL") or "WARNING").upper())
    run: Callable[[argparse.Namespace, Mapping[str, str]], int] = args.run
    try:
        return run(args, environ)
    except ConfigError as exc:
        print(f"error: configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StorageError as exc:
        print(f"error: bucket: {exc}", file=sys.stderr)
        return EXIT_STORAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
