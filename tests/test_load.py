"""The load test's short form (``python -m loadtest``, README "Load test") on every
backend: two instances of two gunicorn workers each on one bucket, 10 s of concurrent
uploads, same-name uploads through both, removals, reads and pip installs, then every
invariant of the report."""

from __future__ import annotations

from pathlib import Path

import pytest

import loadtest
from testkit.buckets import BucketProbe

pytestmark = pytest.mark.slow

SECONDS = 10
CLIENTS = 8


def test_two_instances_under_load_keep_every_invariant(bucket: BucketProbe, tmp_path: Path) -> None:
    result = loadtest.run(bucket, tmp_path, seconds=SECONDS, clients=CLIENTS)
    print(result.text)  # shown with -s, or by -ra on failure
    assert result.passed, result.text
