"""Readiness: the one place that writes its fields, for ``StorageClient.status`` and the
web app's ``/ready`` and warmup answers.

    status            "starting", "degraded" or "ok" (``ReadinessStatus``)
    last_sync         when the folder was last known to match the bucket (RFC 3339)
    lag_seconds       how long ago that was
    unservable_files  how many files of the bucket could not be fetched here
    reason            a short category, naming no bucket, path or file
    details           for the operator only: the bucket, the last error, a few names
"""

from __future__ import annotations

import enum
import time
from typing import Optional, cast

from gcs_sync.clock import rfc3339
from gcs_sync.sync.view import ViewRecord

# Readiness names at most this many of the files it cannot serve (to the operator only).
_UNSERVABLE_NAMES_SHOWN = 20


class ReadinessStatus(enum.StrEnum):
    STARTING = "starting"  # nothing listed, or no check yet since this machine booted
    DEGRADED = "degraded"  # the bucket failed, files could not be fetched, or the checks stopped
    OK = "ok"


def view_times(age: Optional[float]) -> dict[str, object]:
    """``last_sync`` and ``lag_seconds`` for a view ``age`` seconds old (None: unknown)."""
    return {
        # When the folder was last known to match the bucket, and how long ago.
        "last_sync": None if age is None else rfc3339(time.time() - age),
        "lag_seconds": None if age is None else round(age, 3),
    }


def status(view: ViewRecord, store_url: str, lock_timeout: float) -> dict[str, object]:
    """What readiness reports, for this instance (its workers share the folder):
    "starting" until a first sync has listed the bucket; "degraded" while the last
    attempt to reach the bucket failed (reads go on from the local copy) or files of
    the bucket could not be fetched (they answer 404 here), with how many and why;
    else "ok". Names, paths and messages are in ``details``, for the operator only."""
    state = view.state
    last_listing = view.last_listing()
    age = view.view_age()
    failure = state.last_failure() or view.not_superseded(view.unrecorded_failure)
    unservable = state.unservable() or view.unservable_not_fetched() or {}
    # How old the view may be while the checks go well: the checker's interval, one
    # check that takes its whole budget, and the margin of a stalled one.
    stale = age is not None and age > view.stall_seconds() + lock_timeout
    if last_listing is None or age is None:
        current = ReadinessStatus.STARTING
    elif failure is not None or unservable or stale:
        current = ReadinessStatus.DEGRADED
    else:
        current = ReadinessStatus.OK
    reasons = sorted({str(entry.get("reason", "error")) for entry in unservable.values()})
    if failure is not None:
        reasons.insert(0, str(failure.get("reason") or "error"))
    elif stale and last_listing is not None:
        reasons.insert(0, "stale view")  # the checks stopped: a hung one, a stuck sibling
    failed_at = None if failure is None else failure.get("at")
    if failure is not None and isinstance(failed_at, (int, float)):
        failure = {**failure, "at": rfc3339(failed_at)}
    return {
        "status": current.value,
        **view_times(age),
        "unservable_files": len(unservable),
        "reason": "; ".join(dict.fromkeys(reasons)) or None,
        "details": {
            "backend": store_url,
            "last_error": None if failure is None else {
                k: v for k, v in failure.items() if k in ("error", "at")
            },
            # A few names are enough to act on; the log has every one.
            "unservable": dict(sorted(unservable.items())[:_UNSERVABLE_NAMES_SHOWN]),
        },
    }


def readiness_answer(status: dict[str, object], files: int, *, with_details: bool) -> dict[str, object]:
    """The ``/ready`` answer from ``status``: its fields and the number of files served.
    Anonymous callers learn the status, counts and a short reason; the bucket's URL,
    messages and file names only go to the log and to those allowed (READY_DETAILS)."""
    fields = dict(status)
    details = fields.pop("details")
    answer: dict[str, object] = {"status": fields.pop("status"), "files": files, **fields}
    if with_details:
        answer.update(cast(dict[str, object], details))
    return answer


def is_ready(answer: dict[str, object], *, warmup: bool) -> bool:
    """Whether ``answer`` (``readiness_answer``) is a 200. For warmup, only with the whole index:
    not while starting, nor with files of the bucket that could not be fetched (they
    would 404 here)."""
    if warmup:
        return answer["status"] != ReadinessStatus.STARTING and not answer["unservable_files"]
    return answer["status"] != ReadinessStatus.STARTING
