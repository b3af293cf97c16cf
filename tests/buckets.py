"""The bucket helpers live in testkit.buckets; this name stays only for tests/test_drivers.py,
which another branch rewrites (issue 10). Delete it once that file imports testkit.buckets."""

from testkit.buckets import MARKER, BucketProbe

__all__ = ["MARKER", "BucketProbe"]
