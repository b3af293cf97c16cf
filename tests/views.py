"""Time passing, for tests of freshness: moments of the monotonic clock (gcs_sync.clock),
never file times, so the tests see what a clock step would not change."""

from __future__ import annotations

import json
from pathlib import Path

from gcs_sync.clock import Moment, boot_id, now
from gcs_sync.sync.client import StorageClient


def age_view(client: StorageClient, seconds: float) -> None:
    """Pretend the instance's last check of the bucket was ``seconds`` ago (once the
    snapshot and expiry after its last full listing, in their own thread, are done: their
    bucket calls are not the next check's)."""
    assert client.wait_for_maintenance(), "the maintenance after a full listing did not end"
    past = Moment(now() - seconds, boot_id())
    client.state.mark_pulled(past)
    client._checked = past  # this process's own memory of it, too


def age_listing(folder: Path, seconds: float) -> None:
    """Pretend the last full listing of the bucket began ``seconds`` earlier than it did."""
    record_path = folder / ".gcs_sync" / "listing.json"
    record = json.loads(record_path.read_text())
    record["began"]["monotonic"] -= seconds
    record_path.write_text(json.dumps(record))

