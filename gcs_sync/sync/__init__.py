"""The sync engine: keeps one local package folder converged on the bucket.

Owns the three-way plan (a pure function of the listings), the change events and their
strategies, the last-synced state, the local folder, the settle watch, pending multi-file
uploads, the write breaker, the engine that gathers, plans, applies and records, and the
sync report with its log lines.

``StorageClient`` (client.py) is the facade the other layers use; behind it, one job per
module: view (how current the view is), freshness (the gate every read asks, the
back-off), checker (the background thread), engine (the sync), readiness (its fields),
heap (long-lived objects out of the garbage collector's scans),
feed (the change feed), warn_once, and writes (a request's own uploads and removals).

May import: ``gcs_sync.drivers`` and the top-level modules (config, errors, names, clock,
files). Never ``web``, ``auth``, ``ops`` or ``cli``.
"""
