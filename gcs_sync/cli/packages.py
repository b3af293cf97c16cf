"""Commands that move and compare packages: status, pull, push, verify.

The work is in ``gcs_sync.ops`` (one module per command); this module parses the
arguments and prints. None of them deletes anything in the bucket. Progress bars (tqdm)
go to stderr, and only when stderr is a terminal, unless ``--progress`` or
``--no-progress`` says otherwise; results go to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional

import filelock
from tqdm import tqdm

from gcs_sync.cli.common import (
    EXIT_DIFFERENT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    human_bytes,
    open_bucket,
    progress_bar,
    progress_option,
    section,
    store_settings,
)
from gcs_sync.clock import rfc3339
from gcs_sync.config import Settings
from gcs_sync.drivers import make_driver
from gcs_sync.errors import StorageError
from gcs_sync.ops import push as ops_push
from gcs_sync.ops import verify as ops_verify
from gcs_sync.ops.gather import scan_folder
from gcs_sync.ops.pull import download_size, pull_client
from gcs_sync.ops.push import Pushed
from gcs_sync.listings import CONTROL_FOLDER
from gcs_sync.ops.status import CatalogComparison, Comparison, compare, compare_catalog
from gcs_sync.ops.verify import Verified
from gcs_sync.sync.client import StorageClient
from gcs_sync.sync.events import ContentChangeEvent, RemoteDeleted, Uncatalogued
from gcs_sync.sync.plan import SyncPlan
from gcs_sync.sync.readiness import view_times
from gcs_sync.sync.state import StateFile

# How long pull waits for the folder's lock, which a running server holds during its
# syncs (a cold start of a large repository can take minutes).
DEFAULT_LOCK_WAIT = 120.0


def add_commands(commands: "argparse._SubParsersAction", parent: argparse.ArgumentParser) -> None:
    progress = progress_option()

    status = commands.add_parser(
        "status", parents=[parent], help="what differs between the local folder and the bucket",
        description="Compare the local package folder (LOCAL_PACKAGE_DIRECTORY) with the bucket: files "
        "only in the bucket (a pull downloads them), only here (removed from the bucket, or never "
        "in it: push uploads those), and in both with other content; plus when the folder was last "
        "found current and the last error its server recorded. Files are compared by the versions "
        "recorded at the last sync, else by sha256 or size (verify compares every byte). Changes "
        "nothing. Exit 0 if they agree, 1 if something differs.",
    )
    status.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    status.set_defaults(run=run_status)

    pull = commands.add_parser(
        "pull", parents=[parent, progress], help="bring the local folder to the bucket's content",
        description="Download what the local package folder (LOCAL_PACKAGE_DIRECTORY) lacks or has in "
        "another version, and remove the files the bucket no longer has, SYNC_CONCURRENCY at a time: "
        "the server's own sync, under the folder's lock, so a server on the same folder stays "
        "consistent. Files only here are left alone. Never writes to the bucket. Exit 0 if every "
        "change was applied, 1 if some failed (named).",
    )
    pull.add_argument(
        "--wait", type=float, default=DEFAULT_LOCK_WAIT, metavar="SECONDS",
        help=f"how long to wait for the folder's lock while a running server syncs (default {DEFAULT_LOCK_WAIT:g})",
    )
    pull.set_defaults(run=run_pull)

    push = _folder_command(
        commands, "push", [parent, progress], help="upload a folder's packages the bucket lacks",
        description="Upload every package file of FOLDER (any folder, for example a stock pypiserver "
        "one; default LOCAL_PACKAGE_DIRECTORY) that the bucket lacks, create-only, with its sha256, "
        "SYNC_CONCURRENCY at a time, and store each file's record beside it (a file whose metadata "
        "cannot be read is pushed anyway, with a record that says why); then add them to the change feed, so running instances "
        "take them at their next check. A name the bucket has with the same content counts as done; "
        "with other content it is a conflict, reported and left alone unless --overwrite. Other "
        "files and sub-folders are skipped and listed. Never deletes. Exit 0 if every package file "
        "is in the bucket, 1 after a conflict or a failure.",
        folder_help="the folder to upload (default: LOCAL_PACKAGE_DIRECTORY)", run=run_push,
    )
    push.add_argument("--overwrite", action="store_true",
                      help="replace bucket objects whose content differs (the OVERWRITE variable does not apply)")
    push.add_argument("--dry-run", action="store_true", help="only say what would be uploaded; write nothing")

    _folder_command(
        commands, "verify", [parent, progress], help="check every local file's sha256 against the bucket",
        description="Hash every package file of FOLDER (default LOCAL_PACKAGE_DIRECTORY) and compare it "
        "with the bucket object's sha256 metadata; where the bucket's listing has none (objects put "
        "there by other tools; S3 and local listings carry no metadata) the object is downloaded "
        "to a temporary folder and hashed. Reports mismatches, files missing from the bucket and "
        "bucket objects missing here. Changes nothing. Exit 0 only if everything matches.",
        folder_help="the folder to check (default: LOCAL_PACKAGE_DIRECTORY)", run=run_verify,
    )


def _folder_command(commands: "argparse._SubParsersAction", name: str, parents: list[argparse.ArgumentParser], *,
                    help: str, description: str, folder_help: str,
                    run: Callable[[argparse.Namespace, Mapping[str, str]], int]) -> argparse.ArgumentParser:
    """A command that works on FOLDER, by default LOCAL_PACKAGE_DIRECTORY (push, verify)."""
    command = commands.add_parser(name, parents=parents, help=help, description=description)
    command.add_argument("folder", nargs="?", metavar="FOLDER", type=Path, help=folder_help)
    command.set_defaults(run=run)
    return command


# -- shared helpers ---------------------------------------------------------------------


def _target(args: argparse.Namespace, settings: Settings) -> tuple[Path, str]:
    """The folder a command works on and the name to blame if it does not exist."""
    if getattr(args, "folder", None) is not None:
        return args.folder, "FOLDER"
    return settings.local_package_directory, "LOCAL_PACKAGE_DIRECTORY"


def _when(epoch: object, timespec: str = "seconds") -> Optional[str]:
    """An epoch time as RFC 3339 in UTC, as /ready reports times; None if there is none."""
    if not isinstance(epoch, (int, float)):
        return None
    return rfc3339(epoch, timespec)


def _with_time(record: Optional[dict[str, object]], key: str) -> Optional[dict[str, object]]:
    return None if record is None else {**record, key: _when(record.get(key), "milliseconds")}


# -- status -----------------------------------------------------------------------------


def run_status(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings = store_settings(args, environ)
    driver = open_bucket(settings)
    if settings.package_files != "mirror":
        catalog = compare_catalog(driver, settings.local_package_directory, settings.package_files,
                                  settings.cache_max_bytes)
        print(json.dumps(_catalog_json(catalog), indent=2) if args.json else "\n".join(_catalog_text(catalog)))
        return EXIT_OK if catalog.in_sync else EXIT_DIFFERENT
    comparison = compare(driver, settings.local_package_directory, "LOCAL_PACKAGE_DIRECTORY")
    if args.json:
        print(json.dumps(_status_json(comparison), indent=2))
    else:
        print("\n".join(_status_text(comparison)))
    return EXIT_OK if comparison.in_sync else EXIT_DIFFERENT


def _status_json(c: Comparison) -> dict[str, object]:
    return {
        "in_sync": c.in_sync,
        "folder": str(c.folder.folder),
        "folder_exists": c.folder.exists,
        "bucket": c.bucket_url,
        "same": len(c.same),
        "only_in_bucket": [{"name": o.name, "size": o.size} for o in c.only_in_bucket],
        "removed_from_bucket": c.removed_from_bucket,
        "only_here": c.only_here,
        "different": [{"name": d.name, "reason": d.reason} for d in c.different],
        "skipped_bucket_objects": c.bucket.skipped,
        **view_times(c.lag_seconds),  # the same fields, and time format, as the server's /ready
        "last_listing": _with_time(c.last_listing, "listed_at"),
        "last_error": _with_time(c.last_error, "at"),
    }


def _status_text(c: Comparison) -> Iterator[str]:
    exists = "" if c.folder.exists else " (does not exist yet)"
    yield f"folder: {c.folder.folder}{exists}, {len(c.folder.files)} package files"
    yield f"bucket: {c.bucket_url}, {len(c.bucket.objects)} package files"
    if c.last_sync is None:
        yield "last sync: never (no sync has recorded this folder as current)"
    else:
        yield f"last sync: {_when(c.last_sync)} (current as of {c.lag_seconds:.1f} s ago)"
    if c.last_error is not None:
        yield f"last error: {c.last_error.get('error')} (at {_when(c.last_error.get('at')) or 'an unknown time'})"
    yield from section("only in the bucket (a pull downloads them)",
                        [f"{o.name} ({human_bytes(o.size)})" for o in c.only_in_bucket])
    yield from section("removed from the bucket since the last sync (a pull removes them here)",
                        c.removed_from_bucket)
    yield from section("only here, never in the bucket (a pull leaves them; push uploads them)", c.only_here)
    yield from section("different (a pull replaces them with the bucket's)",
                        [f"{d.name}: {d.reason}" for d in c.different])
    yield from section("bucket objects that are not package filenames (never synced)", c.bucket.skipped)
    differing = len(c.only_in_bucket) + len(c.removed_from_bucket) + len(c.only_here) + len(c.different)
    if differing:
        yield f"differences: {differing} files; {len(c.same)} agree"
    else:
        yield f"in sync: all {len(c.same)} files agree"


def _catalog_json(c: CatalogComparison) -> dict[str, object]:
    return {
        "in_sync": c.in_sync,
        "package_files": c.mode,
        "folder": str(c.folder),
        "bucket": c.bucket_url,
        "catalogued": c.catalogued,
        "not_catalogued": c.not_catalogued,
        "changed": c.changed,
        "gone_from_bucket": c.gone,
        "cache": c.cache,
        "skipped_bucket_objects": c.bucket.skipped,
        **view_times(c.lag_seconds),
        "last_listing": _with_time(c.last_listing, "listed_at"),
        "last_error": _with_time(c.last_error, "at"),
    }


def _catalog_text(c: CatalogComparison) -> Iterator[str]:
    yield (f"folder: {c.folder} (PACKAGE_FILES={c.mode}: a catalog of the bucket, no package files), "
           f"{c.catalogued} files catalogued")
    yield f"bucket: {c.bucket_url}, {len(c.bucket.objects)} package files"
    if c.cache is None:
        yield "cache: empty (no file downloaded through this folder yet)"
    else:
        yield (f"cache: {c.cache['files']} files, {human_bytes(c.cache['bytes'])} of "
               f"{human_bytes(c.cache['max_bytes'])} (CACHE_MAX_BYTES)")
    if c.last_sync is None:
        yield "last sync: never (no sync has recorded this folder as current)"
    else:
        yield f"last sync: {_when(c.last_sync)} (current as of {c.lag_seconds:.1f} s ago)"
    if c.last_error is not None:
        yield f"last error: {c.last_error.get('error')} (at {_when(c.last_error.get('at')) or 'an unknown time'})"
    yield from section("in the bucket, not catalogued yet (the next check or a pull adds them)", c.not_catalogued)
    yield from section("changed in the bucket, file or record (the next check reads them)", c.changed)
    yield from section("catalogued, gone from the bucket (the next check forgets them)", c.gone)
    yield from section("bucket objects that are not package filenames (never served)", c.bucket.skipped)
    differing = len(c.not_catalogued) + len(c.changed) + len(c.gone)
    yield f"differences: {differing} files" if differing else f"in sync: all {c.catalogued} files catalogued"


# -- pull -------------------------------------------------------------------------------


class _PullProgress:
    """The progress bar of one sync, in bytes downloaded."""

    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args
        self._bar: Optional[tqdm] = None
        self.local_only: list[str] = []

    def planned(self, plan: SyncPlan) -> None:
        self.local_only = list(plan.local_only)
        self._bar = progress_bar(self._args, sum(download_size(e) for e in plan.events), "pull")

    def finished(self, event: ContentChangeEvent, error: Optional[StorageError]) -> None:
        if self._bar is not None:
            self._bar.update(download_size(event))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def run_pull(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings = store_settings(args, environ)
    driver = open_bucket(settings)
    client = pull_client(driver, settings, args.wait)
    progress = _PullProgress(args)
    interrupted = threading.Event()
    try:
        with _stop_on_interrupt(client, interrupted):
            report = client.sync(progress)
    except filelock.Timeout:
        print(f"error: the folder's lock {client.folder.control / 'lock'} was held by another process "
              f"(a running server's sync?) for {args.wait:g} s; try again, or give more --wait",
              file=sys.stderr)
        return EXIT_DIFFERENT
    finally:
        progress.close()
    client.state.clear_failure()  # as after a server's own successful check
    if settings.package_files != "mirror":
        forgotten = sum(1 for e in report.applied if isinstance(e, Uncatalogued))
        print(f"catalogued {len(report.applied) - forgotten} files, forgot {forgotten}, {len(report.failed)} failed, "
              f"in {report.seconds:.1f} s: {client.folder.path} from {driver.url} (PACKAGE_FILES={settings.package_files}: "
              "no package file is downloaded; the cache fetches each on its first request)")
        for event, error in sorted(report.failed, key=lambda f: f[0].name):
            if not interrupted.is_set():
                print(f"  failed: {event.name}: {error}")
        return EXIT_INTERRUPTED if interrupted.is_set() else EXIT_DIFFERENT if report.failed else EXIT_OK
    pulled = [e for e in report.applied if not isinstance(e, RemoteDeleted)]
    removed = [e for e in report.applied if isinstance(e, RemoteDeleted)]
    print(f"pulled {len(pulled)} files ({human_bytes(sum(map(download_size, pulled)))}), removed {len(removed)}, "
          f"{len(report.failed)} failed, in {report.seconds:.1f} s: {client.folder.path} from {driver.url}")
    for event, error in sorted(report.failed, key=lambda f: f[0].name):
        if not interrupted.is_set():
            print(f"  failed: {event.name}: {error}")
    if progress.local_only:
        print(f"left alone: {len(progress.local_only)} files here are not in the bucket (push uploads them): "
              + ", ".join(progress.local_only))
    if report.skipped_names:
        print(f"skipped {len(report.skipped_names)} bucket objects that are not package filenames: "
              + ", ".join(sorted(report.skipped_names)))
    if interrupted.is_set():
        print(f"interrupted: {len(report.failed)} changes left for the next pull", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_DIFFERENT if report.failed else EXIT_OK


@contextlib.contextmanager
def _stop_on_interrupt(client: StorageClient, interrupted: threading.Event) -> Iterator[None]:
    """During the sync, the first Ctrl-C lets the transfers in flight finish, skips the
    rest and records what was done (as a stopping worker does); a second one aborts."""
    if threading.current_thread() is not threading.main_thread():  # only there can a handler be set
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def stop(signum: int, frame: object) -> None:
        interrupted.set()
        client.stop()
        signal.signal(signal.SIGINT, previous)
        print("\nstopping after the transfers in flight (Ctrl-C again to abort)", file=sys.stderr)

    signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# -- push -------------------------------------------------------------------------------


def run_push(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings = store_settings(args, environ)
    scan = scan_folder(*_target(args, settings))  # a missing folder: exit 3 before any bucket request
    driver = open_bucket(settings, may_create=not args.dry_run)
    bar: Optional[tqdm] = None

    def start(total: int) -> None:
        nonlocal bar
        bar = progress_bar(args, total, "push (dry run)" if args.dry_run else "push")

    try:
        report = ops_push.push(driver, scan, concurrency=settings.sync_concurrency,
                               overwrite=args.overwrite, dry_run=args.dry_run,
                               advance=lambda n: bar.update(n) if bar is not None else None, on_start=start)
    finally:
        if bar is not None:
            bar.close()
    print("\n".join(_push_text(report, driver.url)))
    return EXIT_OK if report.complete else EXIT_DIFFERENT


def _push_text(report: ops_push.PushReport, url: str) -> Iterator[str]:
    would = "would be " if report.dry_run else ""
    uploaded, overwritten = report.named(Pushed.UPLOADED), report.named(Pushed.OVERWRITTEN)
    conflicts, failed = report.named(Pushed.CONFLICT), report.named(Pushed.FAILED)
    head = "dry run, nothing written: " if report.dry_run else ""
    moved = sum(o.size for o in uploaded + overwritten)
    yield (f"{head}{report.folder.folder} -> {url}: {len(uploaded)} {would}uploaded, {len(overwritten)} "
           f"{would}overwritten ({human_bytes(moved)}), {len(report.named(Pushed.PRESENT))} already there, "
           f"{len(conflicts)} conflicts, {len(failed)} failed, {len(report.folder.skipped)} skipped")
    yield from section(f"{would}uploaded", [o.name for o in uploaded])
    yield from section(f"{would}overwritten (--overwrite)", [o.name for o in overwritten])
    yield from section("conflicts, left alone (--overwrite replaces them)",
                        [f"{o.name}: {o.detail}" for o in conflicts])
    yield from section("failed", [f"{o.name}: {o.detail}" for o in failed])
    yield from section("skipped, not package files", [f"{name}: {why}" for name, why in report.folder.skipped])
    if report.records_stored:
        yield f"records stored: {len(report.records_stored)}"
    yield from section("bad files, pushed anyway with a record that notes the problem (served without metadata)",
                        [o.problem for o in report.bad_files])
    yield from section("records not stored (backfill stores them)", [f"{o.name}: {o.record}" for o in report.records_failed])
    if report.hashed_by_download:
        yield (f"compared by downloading: {len(report.hashed_by_download)} bucket objects had no sha256 in the "
               "listing")
    if report.feed_error is not None:
        yield (f"warning: could not add the change to the change feed ({report.feed_error}); running instances "
               "see the new files at their next full listing (FULL_SYNC_INTERVAL)")
    elif (uploaded or overwritten or report.records_stored) and not report.dry_run:
        yield "change feed written: running instances take the new files at their next check"


# -- verify -----------------------------------------------------------------------------


def run_verify(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings = store_settings(args, environ)
    if settings.package_files != "mirror" and getattr(args, "folder", None) is None:
        return _verify_cache(args, settings)
    scan = scan_folder(*_target(args, settings))  # a missing folder: exit 3 before any bucket request
    driver = open_bucket(settings)
    bar: Optional[tqdm] = None

    def start(total: int) -> None:
        nonlocal bar
        bar = progress_bar(args, total, "verify")

    try:
        report = ops_verify.verify(driver, scan, concurrency=settings.sync_concurrency,
                                   advance=lambda n: bar.update(n) if bar is not None else None, on_start=start)
    finally:
        if bar is not None:
            bar.close()
    print("\n".join(_verify_text(report)))
    return EXIT_OK if report.all_match else EXIT_DIFFERENT


def _verify_cache(args: argparse.Namespace, settings: Settings) -> int:
    """PACKAGE_FILES cache or redirect: the files here are the cache's (no bucket call)."""
    control = settings.local_package_directory / CONTROL_FOLDER
    # The state names the store as its driver does (no bucket call is made here).
    catalog = StateFile(control, make_driver(settings).url).load() if control.is_dir() else {}
    bar: Optional[tqdm] = None

    def start(total: int) -> None:
        nonlocal bar
        bar = progress_bar(args, total, "verify")

    try:
        report = ops_verify.verify_cache(control / "cache", catalog, concurrency=settings.sync_concurrency,
                                         advance=lambda n: bar.update(n) if bar is not None else None,
                                         on_start=start)
    finally:
        if bar is not None:
            bar.close()
    matched = report.named(Verified.MATCH)
    print(f"cache {report.directory} (PACKAGE_FILES={settings.package_files}): {len(matched)} of "
          f"{len(report.checks)} cached files match the digest they are served under")
    print("\n".join(section("MISMATCH: served as these bytes, but they are not (delete the file; it is fetched again)",
                             [f"{c.sha256} ({', '.join(c.filenames) or 'not catalogued'}): {c.detail}"
                              for c in report.named(Verified.MISMATCH)])))
    print("\n".join(section("could not be checked", [f"{c.sha256}: {c.detail}"
                                                     for c in report.named(Verified.UNCHECKED)])))
    print("ok: every cached file matches" if report.all_match else "differences found")
    return EXIT_OK if report.all_match else EXIT_DIFFERENT


def _verify_text(report: ops_verify.VerifyReport) -> Iterator[str]:
    matched = report.named(Verified.MATCH)
    downloaded = [c for c in report.checks if c.by_download]
    yield f"{report.folder.folder} against {report.bucket_url}: {len(matched)} of {len(report.checks)} match"
    yield from section("mismatch (sha256 here, in the bucket)",
                        [f"{c.name}: {c.local_sha256} != {c.bucket_sha256}" for c in report.named(Verified.MISMATCH)])
    yield from section("missing from the bucket", [c.name for c in report.named(Verified.MISSING_IN_BUCKET)])
    yield from section("missing here (in the bucket only)", [c.name for c in report.named(Verified.MISSING_HERE)])
    yield from section("could not be checked", [f"{c.name}: {c.detail}" for c in report.named(Verified.UNCHECKED)])
    if downloaded:
        yield (f"downloaded and hashed: {len(downloaded)} bucket objects had no sha256 metadata in the listing "
               "(put there by other tools, or the backend's listing carries none)")
    if report.skipped_bucket_objects:
        yield ("not checked: bucket objects that are not package filenames: "
               + ", ".join(report.skipped_bucket_objects))
    yield "ok: every file matches" if report.all_match else "differences found"
