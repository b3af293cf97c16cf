"""The sync plan: a pure function of three listings. No I/O, no SDK.

    local   name -> fingerprint of the file in the package folder
    remote  name -> RemoteObject in the bucket
    synced  name -> SyncedFile, the state when both sides last agreed

The bucket is the source of truth: when both sides changed, the bucket's version wins.
A file missing on one side is deleted on the other only if ``synced`` says both had it.
A file deleted from the local folder by something other than this index (a tmp cleaner,
a person) is deleted from the bucket only if ``propagate_local_deletes``; otherwise it is
downloaded again. The index's own removals never reach this point: they delete from the
bucket first and update the state.
"""

from __future__ import annotations

from typing import Mapping

from .drivers.base import RemoteObject
from .events import (
    ContentChangeEvent,
    LocalAdded,
    LocalDeleted,
    RemoteAdded,
    RemoteChanged,
    RemoteDeleted,
)
from .state import SyncedFile


def plan_sync(
    local: Mapping[str, str],
    remote: Mapping[str, RemoteObject],
    synced: Mapping[str, SyncedFile],
    *,
    propagate_local_deletes: bool,
) -> list[ContentChangeEvent]:
    if not local and synced:
        # The folder was wiped but its state survived: treat it as a new folder rather
        # than mirror-deleting the whole bucket.
        synced = {}
    events: list[ContentChangeEvent] = []
    for name in sorted(set(local) | set(remote)):
        here, there, before = local.get(name), remote.get(name), synced.get(name)
        if there is not None and here is None:
            if propagate_local_deletes and before is not None and before.remote_version == there.version:
                events.append(LocalDeleted(name, there.version))
            else:
                events.append(RemoteAdded(name, there))
        elif there is not None and here is not None:
            if (
                before is None
                or before.remote_version != there.version
                or before.local_fingerprint != here
            ):
                events.append(RemoteChanged(name, there))
        elif here is not None:
            if before is None:
                events.append(LocalAdded(name, here))
            else:
                events.append(RemoteDeleted(name))
    return events


def next_state(
    local: Mapping[str, str],
    remote: Mapping[str, RemoteObject],
    synced: Mapping[str, SyncedFile],
) -> dict[str, SyncedFile]:
    """The state before any event is applied: entries of files gone from both sides are
    dropped; every other entry stays until its event succeeds."""
    return {name: entry for name, entry in synced.items() if name in local or name in remote}
