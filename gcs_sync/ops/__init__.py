"""The operator's bulk operations between a folder and the bucket, one module per job:

    gather     the package files of a folder and of the bucket (by ``gcs_sync.listings``)
    status     a dry run of pull: the sync's own plan, reported
    pull       the server's own sync, writing nothing to the bucket
    push       upload what the bucket lacks, create-only
    verify     compare every file's sha256 with the bucket's
    transfers  work on many files at a time; the sha256 of an object's bytes

They serve no requests; the command line drives them. None deletes anything in the
bucket. May import: ``gcs_sync.sync``, ``gcs_sync.drivers`` and the top-level modules.
Never ``web`` or ``cli``.
"""
