"""Commands that keep the package files' records: yank, unyank, backfill.

The work is in ``gcs_sync.ops.records``; this module parses the arguments and prints.
None of them changes or deletes a package file: only records (and the core metadata
files they name) are written. Progress bars go to stderr as for push and pull.
"""

from __future__ import annotations

import argparse
import sys
from typing import Iterator, Mapping, Optional

from tqdm import tqdm

from gcs_sync.cli.common import (
    EXIT_DIFFERENT,
    EXIT_OK,
    human_bytes,
    open_bucket,
    progress_bar,
    progress_option,
    section,
    store_settings,
)
from gcs_sync.ops import records as ops_records
from gcs_sync.ops.records import Backfilled, ReleaseNotFound


def add_commands(commands: "argparse._SubParsersAction", parent: argparse.ArgumentParser) -> None:
    progress = progress_option()

    yank = commands.add_parser(
        "yank", parents=[parent], help="mark a release yanked (PEP 592)",
        description="Mark every file of release NAME VERSION in the bucket yanked, with an optional "
        "reason: installers then skip it, unless a requirement pins that very version (==), which "
        "still installs, with a warning. Only the files' records change, never the files; a file "
        "without a record gets one first. Then each file gets a change-feed entry, so running "
        "instances serve it within SYNC_INTERVAL. Exit 1 if the bucket has no file of that release.",
    )
    yank.add_argument("name", metavar="NAME", help="the project's name (any spelling PEP 503 normalises alike)")
    yank.add_argument("version", metavar="VERSION", help="the release's version, as in its filenames")
    yank.add_argument("--reason", metavar="TEXT", help="why it is yanked: installers show it")
    yank.set_defaults(run=run_yank, yanked=True)

    unyank = commands.add_parser(
        "unyank", parents=[parent], help="undo a yank",
        description="Mark every file of release NAME VERSION in the bucket not yanked (the reason "
        "goes too). Only the files' records change. Exit 1 if the bucket has no file of that release.",
    )
    unyank.add_argument("name", metavar="NAME", help="the project's name")
    unyank.add_argument("version", metavar="VERSION", help="the release's version, as in its filenames")
    unyank.set_defaults(run=run_yank, yanked=False, reason=None)

    backfill = commands.add_parser(
        "backfill", parents=[parent, progress], help="give every package file in the bucket its record",
        description="Compute the record (and core metadata file) of every package file in the bucket "
        "that has none, or whose record is unreadable or describes other bytes: files put there by "
        "other tools or copied from a stock pypiserver folder. Each is downloaded to a temporary "
        "folder, SYNC_CONCURRENCY at a time, and removed once its record is stored. A file that is "
        "not what its name says gets a record noting the problem (it is still served). Records "
        "whose file is gone are listed, not removed. Then what was written goes into the "
        "change feed. A second run computes nothing. Exit 0 if every file has its "
        "record, 1 if some failed (named).",
    )
    backfill.set_defaults(run=run_backfill)


# -- yank, unyank -----------------------------------------------------------------------


def run_yank(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings = store_settings(args, environ)
    driver = open_bucket(settings)
    try:
        records = ops_records.set_yanked(driver, args.name, args.version, yanked=args.yanked, reason=args.reason)
    except ReleaseNotFound as exc:
        print(f"error: {exc} ({driver.url}); nothing changed", file=sys.stderr)
        return EXIT_DIFFERENT
    what = "yanked" if args.yanked else "unyanked"
    because = f" (reason: {args.reason})" if args.yanked and args.reason else ""
    print(f"{what} {args.name} {args.version}: {', '.join(r.filename for r in records)}{because}")
    return EXIT_OK


# -- backfill ---------------------------------------------------------------------------


def run_backfill(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings = store_settings(args, environ)
    driver = open_bucket(settings)
    bar: Optional[tqdm] = None

    def start(total: int) -> None:
        nonlocal bar
        bar = progress_bar(args, total, "backfill")

    try:
        report = ops_records.backfill(driver, concurrency=settings.sync_concurrency,
                                      advance=lambda n: bar.update(n) if bar is not None else None, on_start=start)
    finally:
        if bar is not None:
            bar.close()
    print("\n".join(_backfill_text(report)))
    return EXIT_OK if report.complete else EXIT_DIFFERENT


def _backfill_text(report: ops_records.BackfillReport) -> Iterator[str]:
    computed, failed = report.named(Backfilled.COMPUTED), report.named(Backfilled.FAILED)
    yield (f"{report.bucket_url}: {len(computed)} records computed ({human_bytes(sum(o.size for o in computed))} "
           f"read), {len(report.named(Backfilled.PRESENT))} already there, {len(failed)} failed, "
           f"{len(report.skipped)} skipped")
    yield from section("computed", [o.name for o in computed])
    yield from section("files whose metadata could not be read (served without it; the record says why)",
                        [o.problem for o in computed if o.problem])
    yield from section("failed", [f"{o.name}: {o.detail}" for o in failed])
    yield from section("skipped, not package files", report.skipped)
    yield from section("records without a package file (left alone)", report.orphans)
    if report.feed_error is not None:
        yield (f"warning: could not add the change to the change feed ({report.feed_error}); running instances "
               "see the records at their next full listing (FULL_SYNC_INTERVAL)")
    elif computed:
        yield "change feed written: running instances take the records at their next check"
    if report.complete:
        yield "ok: every package file has its record"

