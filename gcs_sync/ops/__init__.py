"""The operator's bulk operations: status, pull, push and verify between a folder and the bucket.

They serve no requests; the command line drives them. May import: ``gcs_sync.sync``,
``gcs_sync.drivers`` and the top-level modules. Never ``web`` or ``cli``.
"""
