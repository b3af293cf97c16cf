"""The web side: a Bottle plugin around pypiserver's routes.

    request ─▶ pre-sync ─▶ pypiserver route ─▶ post-sync ─▶ response
                 │          (stages writes)       │
                 ▼                                ▼
         pull if the view is            push staged uploads and removals
         older than SYNC_INTERVAL       to the bucket; only then "200 OK"

A plugin (not ``after_request``) because it must see the route's real outcome: Bottle's
hooks see 200 for every request.

The route's writes reach the plugin through the request's ``PendingChanges``
(``changes``), which the backend fills. ``RequestBodyGuard`` (``body_guard``), a second
plugin around this one, checks the request body before anything reads it.
"""

from __future__ import annotations

import logging
import typing as t

from pypiserver.bottle_wrapper import HTTPError, HTTPResponse, request

from gcs_sync.errors import ObjectExists, StorageError, StorageUnavailable, WritesSuspended
from gcs_sync.sync.client import StorageClient
from gcs_sync.web.changes import PendingChanges, begin_changes

log = logging.getLogger("gcs_sync.plugin")  # the name operators' log queries know


class BucketSyncPlugin:
    name = "gcs_sync"
    api = 2

    def __init__(self, client: StorageClient, *, overwrite: bool, unsynced_routes: t.Iterable[str],
                 read_only_posts: t.Iterable[str] = ()) -> None:
        self.client = client
        self.overwrite = overwrite
        self.unsynced_routes = frozenset(unsynced_routes)
        # POST routes that only read (XML-RPC search): checked like any GET.
        self.read_only_posts = frozenset(read_only_posts)

    def apply(self, callback: t.Callable[..., t.Any], route: t.Any) -> t.Callable[..., t.Any]:
        if route.rule in self.unsynced_routes:
            return callback  # health checks and the favicon never touch the bucket

        reads_only = route.rule in self.read_only_posts

        def synced_route(*args: t.Any, **kwargs: t.Any) -> t.Any:
            if request.method != "POST" or reads_only:
                # Writes skip it: the bucket's create-only write decides an upload, a
                # removal checks only if it does not know the file (backend.find_version),
                # and a bucket that is down must cost a write one timeout, not two.
                self.client.ensure_fresh()
            changes = begin_changes()
            try:
                result = callback(*args, **kwargs)
            except BaseException:
                changes.discard()  # a refused or failed route changes nothing
                raise
            if isinstance(result, HTTPResponse) and result.status_code >= 400:
                changes.discard()
                return result
            if changes.uploads or changes.removals:
                self._commit(changes)
            return result

        return synced_route

    def _commit(self, changes: PendingChanges) -> None:
        names = [staged.name for staged in changes.uploads] + changes.removals
        try:
            changes.commit(self.client, overwrite=self.overwrite)
        except ObjectExists as exc:
            log.warning("upload of %r refused: already in the bucket (%s)", exc.object_name, exc.cause)
            raise _already_exists(exc) from exc
        except StorageError as exc:
            kept = exc.changed_before_failure
            if kept:
                outcome = f"Already changed before the failure: {', '.join(kept)}."
            elif isinstance(exc, WritesSuspended):
                outcome = "Nothing was sent to the bucket, so nothing was changed."
            elif isinstance(exc, StorageUnavailable):
                # A write the bucket did not answer may still land: say so. A retry is safe
                # (the same bytes again are accepted; a delete of a missing file is a success).
                outcome = "The bucket did not confirm the change, so it may still have been applied."
            else:
                outcome = "Nothing was changed."
            log.error("bucket write for %s failed: %s. %s", names, exc, outcome)
            # The reason goes in the status line too: that is what twine and pip print.
            raise HTTPError(
                f"503 Bucket write failed for {_filename(exc)}",
                f"Could not apply the change to {_filename(exc)!r} in the bucket: {exc.cause}\n"
                f"{outcome} Try again later.\n",
            ) from exc


def _filename(exc: StorageError) -> str:
    return exc.object_name.rsplit("/", 1)[-1]


def _already_exists(exc: ObjectExists) -> HTTPError:
    # Same answer as pypiserver's own local check (pypiserver._app.file_upload):
    # 409, or 400 for twine, which expects PyPI's status for an existing file.
    code = 400 if "twine" in request.headers.get("User-Agent", "") else 409
    message = f"Package {_filename(exc)!r} already exists!\n  You may start server with `--overwrite` option."
    if exc.changed_before_failure:
        kept = ", ".join(exc.changed_before_failure)
        log.error("after the conflict on %r, %s stayed in the bucket (undo failed)", exc.object_name, kept)
        message += f"\n  Stored before the conflict and not removed again: {kept}."
    return HTTPError(code, message)
