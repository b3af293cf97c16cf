"""The operator's command line: ``python -m gcs_sync COMMAND`` (``--help`` on each).

It reads the same environment variables as the server, through ``Settings.from_env``;
a flag overrides its variable (each flag's help names it).

Exit codes, the same for every command:
    0  done; for status and verify: the folder and the bucket agree
    1  done, but something differs or failed (status, verify, push, pull, backfill say
       what); yank or unyank of a release the bucket has no file of
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

from gcs_sync.cli import packages, records, users
from gcs_sync.cli.common import (
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_STORAGE,
    store_options,
)
from gcs_sync.errors import ConfigError, StorageError

log = logging.getLogger(__name__)

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gcs_sync",
        description="Operate a gcs_sync package index: compare, move and check packages between "
        "the local folder and the bucket, yank releases, backfill the files' records, and manage "
        "its users.",
        epilog="Exit codes: 0 ok, 1 differences or failures found, 2 usage error, "
        "3 configuration error, 4 bucket not usable, 130 interrupted.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parent = store_options()
    # Each module adds its commands; each command sets ``run(args, environ) -> exit code``.
    packages.add_commands(commands, parent)
    users.add_commands(commands, parent)
    records.add_commands(commands, parent)
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
