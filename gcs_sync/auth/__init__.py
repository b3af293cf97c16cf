"""Who may do what: htpasswd checks, user-name rules and the password file kept in the bucket.

May import: ``gcs_sync.sync`` (the state's failure records, the folder), ``gcs_sync.drivers``
and the top-level modules. Never ``web``, ``ops`` or ``cli``.
"""
