"""The sync plan: a pure function of three listings. No I/O, no SDK.

    local   name -> fingerprint of the file in the package folder
    remote  name -> RemoteObject in the bucket
    synced  name -> SyncedFile, the state when both sides last agreed
    records name -> version of the file's metadata record in the bucket (optional)

The bucket is the source of truth: when both sides changed, the bucket's version wins.
A file missing on one side is deleted on the other only if ``synced`` says both had it.

Changes made straight in the local folder, by something other than this index (a person,
a /tmp cleaner), reach the bucket only with ``push_local_changes``: a file added there is
uploaded, a file edited there replaces the bucket's copy if that is still the version
last synced (else the bucket's wins), a file deleted there is deleted from the bucket
(that version only). A file named in ``unsettled`` (still being written, see
``settle.py``) is neither uploaded nor replaced: it waits for a later sync. Without
``push_local_changes``, a deleted or edited file is downloaded again and an added one
is left alone (listed in ``SyncPlan.local_only`` for the log, never uploaded or
deleted). The index's own uploads and removals never reach this point: they go to the
bucket first and update the state themselves.

Records (when ``records`` is given): a file brought here takes its record with it; a
synced file whose record in the bucket is another version than the one recorded here
gets it (RecordChanged); one with no record there gets one computed (RecordMissing),
unless this instance already computed one it could not store (it said so, once).
"""

from __future__ import annotations

import dataclasses
from typing import Collection, Mapping, Optional

from gcs_sync.drivers.base import RemoteObject, Version
from gcs_sync.sync.events import (
    Catalogued,
    ContentChangeEvent,
    LocalAdded,
    LocalChanged,
    LocalDeleted,
    RecordChanged,
    RecordMissing,
    RemoteAdded,
    RemoteChanged,
    RecordRead,
    RemoteDeleted,
)
from gcs_sync.sync.state import CATALOGUED, SyncedFile


@dataclasses.dataclass(frozen=True)
class SyncPlan:
    events: list[ContentChangeEvent]
    # The state the events apply to: ``synced``, unless it could not be trusted.
    base_state: dict[str, SyncedFile]
    # Files only in the folder that are not pushed (push_local_changes is off).
    local_only: list[str]
    state_reset: bool = False


def plan_sync(
    local: Mapping[str, str],
    remote: Mapping[str, RemoteObject],
    synced: Mapping[str, SyncedFile],
    *,
    push_local_changes: bool,
    unsettled: Collection[str] = frozenset(),
    records: Optional[Mapping[str, Version]] = None,
    partial: bool = False,
    leave_catalogued: bool = False,
) -> SyncPlan:
    """``partial``: the listings are those of a few names only (the names a change feed
    mentioned), so an empty ``local`` says nothing of the folder as a whole.
    ``leave_catalogued``: a file catalogued and not yet here (a mirror that started from a
    catalog snapshot) is not downloaded by this plan, which would hold the folder's lock
    for every byte: the folder's fill brings it (``sync/fill.py``); this plan only
    catalogues it again if the bucket's copy or its record changed (``plan_catalog``)."""
    # (Catalogued entries were never files here: their absence empties nothing.)
    state_reset = not local and not partial and any(e.local_fingerprint != CATALOGUED for e in synced.values())
    if state_reset:
        # The folder was emptied but its state survived: treat it as a new folder, so
        # neither this sync nor a later one takes the missing files as deletions.
        synced = {}
    events: list[ContentChangeEvent] = []
    local_only: list[str] = []
    listed = records or {}
    for name in sorted(set(local) | set(remote)):
        here, there, before = local.get(name), remote.get(name), synced.get(name)
        if before is not None and before.local_fingerprint == CATALOGUED:
            if leave_catalogued and there is not None:
                # (A file here too is one a fill installed and died before recording:
                # the fill's next pass replaces it, outside the lock.)
                listed_record = listed.get(name) if records is not None else before.record_version
                events.extend(plan_catalog({name: there}, {name: before},
                                           {} if listed_record is None else {name: Version(listed_record)}).events)
                continue
            if here is not None and there is None:
                # A file installed by a fill that died before recording it (fill.py), of a
                # name the bucket no longer has: removed like any file the bucket lost,
                # never pushed back.
                events.append(RemoteDeleted(name))
                continue
            # Catalogued while files were not held here (PACKAGE_FILES cache or redirect):
            # never a file that was here, so its absence is no deletion to push; one here
            # now (a fill's, unrecorded) is the bucket's copy downloaded again.
            before = None
        if there is not None and here is None:
            if push_local_changes and before is not None and before.remote_version == there.version:
                events.append(LocalDeleted(name, there.version))
            else:
                events.append(RemoteAdded(name, there, listed.get(name)))
        elif there is not None and here is not None:
            edited_here_only = (
                before is not None and before.remote_version == there.version and before.local_fingerprint != here
            )
            if edited_here_only and push_local_changes and before is not None:  # implied by edited_here_only; said for mypy
                if name not in unsettled:  # else: still being written, the next sync looks again
                    events.append(LocalChanged(name, here, there.version, before.sha256))
            elif before is None or before.remote_version != there.version or before.local_fingerprint != here:
                events.append(RemoteChanged(name, there, listed.get(name)))
            elif records is not None:
                record_event = _record_event(name, before, there, listed.get(name))
                if record_event is not None:
                    events.append(record_event)
        elif here is not None:
            if before is not None:
                events.append(RemoteDeleted(name))
            elif push_local_changes:
                if name not in unsettled:
                    events.append(LocalAdded(name, here))
            else:
                local_only.append(name)
    # Entries of files gone from both sides are dropped; every other entry stays until
    # its event succeeds, so a failed event is planned again next time.
    base_state = {name: entry for name, entry in synced.items() if name in local or name in remote}
    return SyncPlan(events, base_state, local_only, state_reset)


def _record_event(
    name: str, before: SyncedFile, there: RemoteObject, listed: Optional[Version]
) -> Optional[ContentChangeEvent]:
    """The event that brings a synced file's record up to date, if it needs one."""
    if listed is not None:
        return None if listed == before.record_version else RecordChanged(name, before, listed, there.modified)
    if before.record is not None and before.record_version is None:
        return None  # computed here and could not be stored: kept (said once in the log)
    return RecordMissing(name, before, None, there.modified)


def plan_catalog(
    remote: Mapping[str, RemoteObject],
    synced: Mapping[str, SyncedFile],
    records: Mapping[str, Version],
) -> SyncPlan:
    """The plan when package files are not held here (PACKAGE_FILES cache or redirect):
    the state is a catalog of the bucket's files and their records, and the local folder
    plays no part. A file new or changed in the bucket (or whose record changed) is
    catalogued again; a file gone from it is dropped (with ``base_state``)."""
    events: list[ContentChangeEvent] = []
    for name in sorted(remote):
        there, before, listed = remote[name], synced.get(name), records.get(name)
        if before is None or before.local_fingerprint != CATALOGUED or before.record is None:
            events.append(Catalogued(name, there, listed))
        elif before.remote_version == there.version or (before.remote_version == "" and _same_bytes(before, there)):
            # The file is the one catalogued (a feed entry catalogues it before its version
            # is known): only its record may have changed.
            current = before if before.remote_version == there.version else \
                dataclasses.replace(before, remote_version=there.version)
            if listed is not None and listed != before.record_version:
                events.append(Catalogued(name, there, listed))
            elif listed is None and before.record_version is not None:
                events.append(Catalogued(name, there, None))  # its record is gone: computed again
            elif current is not before:
                events.append(RecordRead(name, current))
        else:
            events.append(Catalogued(name, there, listed))
    base_state = {name: entry for name, entry in synced.items() if name in remote}
    return SyncPlan(events, base_state, [])


def _same_bytes(before: SyncedFile, there: RemoteObject) -> bool:
    record = before.record
    if record is None or record.size != there.size:
        return False
    return there.sha256 is None or there.sha256 == record.sha256
